"""Finetuning on the user's own data: the forgetting guard, replay against forgetting, recipes that adapt.

The fact set (tests/data/forgetting/facts.jsonl: eight made-up facts about a library, two phrasings
each) and its held-out third phrasings are ours, not the recipe's bundled mascot data. The whole
comparison (two finetunes) is marked ``long`` and runs after ``make test`` (``make test-long``).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from internlocal.train.guard import guard_lines, guard_summary, knobs, warning
from internlocal.train.recipe import load_recipe

DATA = Path(__file__).parent / "data" / "forgetting"
FACTS = DATA / "facts.jsonl"
HELD_OUT: list[tuple[str, str]] = [tuple(pair) for pair in json.loads((DATA / "heldout.json").read_text())]


def run_cli(internlocal_bin: str, env: dict, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    out = subprocess.run([internlocal_bin, *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out


def test_dry_run_on_the_users_data_prints_the_resolved_epochs_and_lr_and_the_rule(cli_env, internlocal_bin):
    """The recipe's tuned numbers stay on its bundled data; on the user's 16 rows (14 after the validation
    split) the dry run states what epochs and lr became and why; a value the user gives is kept."""
    from internlocal.train.adapt import resolve

    _, recipe = load_recipe("smollm2-135m_qlora_cpu")
    assert recipe.adapt is not None
    epochs, lr, _ = resolve(14, recipe)

    own = run_cli(internlocal_bin, cli_env, "train", "run", "smollm2-135m_qlora_cpu", "--dry-run").stdout
    assert "adapted to" not in own and "epochs: 8" in own and "lr: 0.001" in own

    out = run_cli(
        internlocal_bin, cli_env, "train", "run", "smollm2-135m_qlora_cpu", f"dataset={FACTS}", "--dry-run"
    ).stdout
    assert f"adapted to 14 training examples: epochs {epochs:g}, lr {lr:.2e}" in out, out
    assert "examples to see / 14" in out and "√(14/" in out  # the rule, with this dataset's numbers in it
    assert f"epochs: {epochs:g}" in out.replace(".0\n", "\n")

    planned = json.loads(
        run_cli(
            internlocal_bin,
            cli_env,
            "train",
            "run",
            "smollm2-135m_qlora_cpu",
            f"dataset={FACTS}",
            "lr=3e-4",
            "--dry-run",
            "--json",
        ).stdout
    )
    assert planned["adaptation"]["kept"] == ["lr"] and planned["config"]["lr"] == 3e-4
    assert planned["config"]["epochs"] == epochs


def test_adaptation_follows_the_dataset_size_within_the_recipes_ranges():
    from internlocal.train.adapt import resolve

    _, recipe = load_recipe("smollm2-135m_qlora_cpu")
    a = recipe.adapt
    assert a is not None
    small, large = resolve(4, recipe), resolve(100_000, recipe)
    assert small[0] == a.max_epochs and small[1] == a.lr[0]  # a tiny set: the most epochs, the gentlest rate
    assert large[0] == a.min_epochs and large[1] == a.lr[1]  # a big one: one pass at the recipe's top rate
    middle = resolve(a.full_lr_examples // 4, recipe)
    assert a.lr[0] <= middle[1] <= a.lr[1] and a.min_epochs <= middle[0] <= a.max_epochs


def test_the_guard_warning_names_what_was_lost_and_the_knobs():
    _, recipe = load_recipe("smollm2-135m_qlora_cpu")
    checks = [
        {
            "task": "capitals_en_qa",
            "metric": "exact_match",
            "base": 0.7,
            "result": 0.15,
            "change": -0.55,
            "worse": True,
        },
        {
            "task": "sample_text",
            "metric": "token_perplexity",
            "base": 20.0,
            "result": 21.0,
            "change": 0.05,
            "worse": False,
        },
    ]
    text = warning(checks, recipe)
    assert text is not None
    assert "capitals_en_qa exact_match 0.70 → 0.15" in text and "sample_text" not in text
    assert "replay.ratio=3" in text and "epochs=4" in text and "lr=5.0e-04" in text
    assert warning([{**checks[0], "worse": False}], recipe) is None

    guard = {"enabled": True, "base_model": "base", "result_model": "tuned", "tasks": checks, "warning": text}
    lines = guard_lines(guard)
    assert lines[0] == "forgetting guard: base (base) → tuned"
    assert "capitals_en_qa exact_match: 0.70 → 0.15 (-0.55) ✗ worse" in lines[1]
    assert "sample_text token_perplexity: 20.00 → 21.00 (+5%) ✓ kept" in lines[2]
    assert lines[-1].startswith("warning: The finetune lost general ability")
    line, said = guard_summary(guard)
    assert "capitals_en_qa 0.70 → 0.15 ✗" in line and said == text  # a run recorded without knobs: the sentence
    line, said = guard_summary({**guard, "knobs": knobs(recipe)})
    assert said == "lost general ability: try replay.ratio=3 or epochs=4 or lr=5.0e-04"
    off = {"enabled": False, "note": "the recipe switches the forgetting guard off (guard.enabled: false)"}
    assert guard_lines(off) == ["forgetting guard: off — " + off["note"]]


def job_context(services, folder: Path, number: int = 1):
    """What a job function is handed, over the test's catalog, with its event file at ``folder/<number>.jsonl``."""
    from internlocal.jobs.context import JobContext
    from internlocal.jobs.events import EventWriter

    return JobContext(
        number,
        EventWriter(folder / f"{number}.jsonl"),
        folder / f"{number}.state",
        folder / f"{number}.cancel",
        settings=services.settings,
        catalog=services.catalog,
    )


def test_a_recipe_that_switches_the_guard_off_says_so(services, tmp_path):
    from internlocal.train.guard import run_guard

    ctx = job_context(services, tmp_path)
    _, recipe = load_recipe("smollm2-135m_qlora_cpu", {"guard": {"enabled": False}})
    off = run_guard(ctx, recipe, "smollm2-135m-instruct-q4_1")
    assert guard_lines(off) == [
        "forgetting guard: off — the recipe switches the forgetting guard off (guard.enabled: false)"
    ]
    _, scratch = load_recipe("smollm2-tiny_pretrain_cpu")
    assert "no base to compare with" in run_guard(ctx, scratch, "smollm2-135m-instruct-q4_1")["note"]


def test_replay_prompts_are_not_the_guards_questions():
    """Replay must not teach the probe itself: no bundled replay prompt is a question of a guard task."""
    from internlocal.evals.tasks import get_task
    from internlocal.train.replay import replay_prompts

    _, recipe = load_recipe("smollm2-135m_qlora_cpu")
    _, prompts = replay_prompts(recipe)
    probe = {doc.get("question") or doc.get("text") for t in recipe.guard.tasks for doc in get_task(t).docs}
    assert len(prompts) >= 50 and not set(prompts) & probe


def test_replay_answers_come_from_the_base_once_and_are_mixed_in(services, tmp_path):
    """The embedded model answers the general prompts once (kept in the catalog); a second run reuses them without
    loading it, and the mixed training file holds the user's rows plus ratio × as many replay examples."""
    from internlocal.jobs.events import read_events
    from internlocal.train.replay import base_answers, mix_replay

    prompts = ["What is 2 + 2?", "What is 100 divided by 4?", "Complete the sentence: The early bird catches the ..."]
    own_prompts = tmp_path / "prompts.jsonl"  # a user's own prompt set (the bundled one takes the model a minute)
    own_prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in [*prompts, "What is 7 times 8?"]))
    _, recipe = load_recipe("smollm2-135m_qlora_cpu", {"replay": {"ratio": 1.5, "prompts": str(own_prompts)}})
    base = services.catalog.get_model("smollm2-135m-instruct-q4_1")

    def context(n: int):
        return job_context(services, tmp_path, n)

    first = base_answers(context(1), base, prompts, max_tokens=96)
    assert "25" in (first["What is 100 divided by 4?"] or "") and "worm" in (first[prompts[2]] or ""), first
    again = base_answers(context(2), base, prompts, max_tokens=96)
    assert again == first
    logs = [e["message"] for e in read_events(tmp_path / "2.jsonl")[0] if e["type"] == "log"]
    assert not any("answers" in m for m in logs)  # nothing generated the second time

    train = tmp_path / "train.jsonl"
    train.write_text("".join(line + "\n" for line in FACTS.read_text().splitlines()[:4]))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ctx = context(3)
    mixed, info = mix_replay(ctx, recipe, base, train, run_dir)
    rows = [json.loads(line) for line in mixed.read_text().splitlines()]
    assert len(rows) == 10 and info["examples"] == 6 and info["answered_by"] == base.name
    assert info["distinct_prompts"] == 4 - info["left_out"]
    user_rows = [r for r in rows if "Quillmere" in r["messages"][0]["content"]]
    assert len(user_rows) == 4
    answers = base_answers(ctx, base, [r["messages"][0]["content"] for r in rows if r not in user_rows], 96)
    for r in rows:
        if r not in user_rows:
            assert r["messages"][1]["content"] == answers[r["messages"][0]["content"]]


def held_out_answered(gguf: Path) -> list[tuple[str, str]]:
    """The held-out paraphrases the model answers with the fact's key word (greedy, llama.cpp)."""
    from internlocal.engines.base import GenerationParams
    from internlocal.engines.llamacpp import LlamaCppEngine

    with LlamaCppEngine(gguf, n_ctx=512) as engine:
        answers = [
            (q, engine.chat([{"role": "user", "content": q}], GenerationParams.greedy(max_tokens=40)).collect().text)
            for q, _ in HELD_OUT
        ]
    return [(q, a) for (q, a), (_, key) in zip(answers, HELD_OUT, strict=True) if key.lower() in a.lower()]


@pytest.mark.long
@pytest.mark.timeout(2400)  # two whole finetunes (the second three times the data): about 13 minutes on 2 cores
async def test_the_guard_reports_what_a_plain_finetune_forgot_and_replay_keeps_it(home, cli_env, internlocal_bin):
    """The issue's experiment on a fact set of ours, both runs on the recipe's adapted settings: without replay
    the guard warns that general answers were lost; with replay the facts are learned (held-out paraphrases) and
    the probe stays within the threshold. The Train screen shows both runs' before → after."""
    from internlocal.tui.app import InternLocalApp
    from tests.test_tui import greedy_settings, ready, until

    def finetune(name: str, *extra: str) -> tuple[dict, subprocess.CompletedProcess]:
        out = run_cli(
            internlocal_bin,
            cli_env,
            "train",
            "run",
            "smollm2-135m_qlora_cpu",
            f"dataset={FACTS}",
            "--name",
            name,
            *extra,
            timeout=1200,
        )
        runs = {r["name"]: r for r in json.loads(run_cli(internlocal_bin, cli_env, "train", "runs", "--json").stdout)}
        return runs[name]["summary"], out

    plain, plain_out = finetune("no-replay")
    replayed, replayed_out = finetune("with-replay", "replay.ratio=3")
    models = {m["name"]: m for m in json.loads(run_cli(internlocal_bin, cli_env, "models", "list", "--json").stdout)}
    facts = {
        name: held_out_answered(Path(models[summary["quantized_model"]]["path"]))
        for name, summary in (("no-replay", plain), ("with-replay", replayed))
    }
    report = {
        name: {
            "held_out_facts": f"{len(facts[name])}/{len(HELD_OUT)}",
            **{c["task"]: f"{c['base']:.3f} → {c['result']:.3f}" for c in summary["guard"]["tasks"]},
            "warning": bool(summary["guard"]["warning"]),
        }
        for name, summary in (("no-replay", plain), ("with-replay", replayed))
    }
    print(json.dumps(report, indent=1, ensure_ascii=False))  # the numbers for the notes (pytest -s)

    assert plain["adaptation"]["examples"] == 14 and replayed["replay"]["examples"] == 42
    checks = {c["task"]: c for c in plain["guard"]["tasks"]}
    assert checks["capitals_en_qa"]["worse"], checks
    assert plain["guard"]["warning"] and "warning: The finetune lost general ability" in plain_out.stderr
    assert "replay.ratio=3" in plain_out.stderr

    assert replayed["guard"]["warning"] is None, replayed["guard"]
    assert all(not c["worse"] for c in replayed["guard"]["tasks"])
    # 5 of 8 paraphrases nobody trained on were answered here (with or without replay); half leaves room for the
    # numerics of another CPU
    assert len(facts["with-replay"]) >= 4, facts
    assert "replay: 42 general examples answered by smollm2-135m-instruct-q4_1" in replayed_out.stdout
    logs = [json.loads(line).get("message", "") for f in (home / "jobs").glob("*.jsonl") for line in f.open()]
    cached = "smollm2-135m-instruct-q4_1: every answer came from the cache; the model was not loaded"
    assert logs.count(cached) == 1  # the second run's guard did not measure the base again

    app = InternLocalApp(greedy_settings(home))
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("f10")
        await until(pilot, lambda: type(app.screen).__name__ == "TrainScreen")
        screen = app.screen
        guard = screen.query_one("#guard")
        for name, mark in (("with-replay", "✓"), ("no-replay", "✗")):
            run = app.services.catalog.get_train_run(name)
            screen.watch_run(run)
            await until(pilot, lambda: "capitals_en_qa" in str(guard.render()))
            shown = str(guard.render())
            assert "forgetting guard vs smollm2-135m-instruct-q4_1" in shown and mark in shown, shown
        assert "lost general ability: try replay.ratio=3" in str(guard.render())


def test_the_leaderboard_names_the_base_the_user_chatted_with(services):
    """A finetune of a GGUF base trains on its HF conversion; the leaderboard says it came from the GGUF, through
    the result's own conversion and quantization."""
    from internlocal.catalog.schema import Model
    from internlocal.evals.leaderboard import trained_from

    catalog = services.catalog
    made = {
        name: catalog.add_model(Model(name=name, format=fmt, path=f"/nowhere/{name}"))
        for name, fmt in (("base-q4", "gguf"), ("base-hf", "hf"), ("tuned", "hf"), ("tuned-f16", "gguf"),
                          ("tuned-q8", "gguf"))
    }  # fmt: skip
    for parent, child, operation in (
        ("base-q4", "base-hf", "convert.gguf_to_hf"),
        ("base-hf", "tuned", "finetune"),
        ("tuned", "tuned-f16", "convert.hf_to_gguf"),
        ("tuned-f16", "tuned-q8", "quantize"),
    ):
        catalog.add_lineage(("model", made[parent].id), ("model", made[child].id), operation, {})
    assert trained_from(catalog, "tuned-q8") == "finetune of base-q4"
    assert trained_from(catalog, "base-q4") is None and trained_from(catalog, "base-hf") is None


def test_replay_that_cannot_start_refuses_before_the_run_exists(cli_env, internlocal_bin, home):
    out = subprocess.run(
        [internlocal_bin, "train", "run", "smollm2-135m_qlora_cpu", "replay.ratio=1", "replay.prompts=/no/such.jsonl"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 3 and "Replay prompts '/no/such.jsonl' not found" in out.stderr, out.stderr[-1500:]
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())
