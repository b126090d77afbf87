"""Preference tuning (DPO, ORPO): pair datasets in their common layouts, agreement with TRL, the CPU recipes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from internlocal.data.formats import load_examples
from internlocal.errors import UserError
from internlocal.train.recipe import Recipe, load_recipe, parse_overrides, recipes_dir
from tests.test_train import events, greedy, loop

FRENCH = recipes_dir() / "data" / "answer_in_french.jsonl"
REPO = Path(__file__).resolve().parents[1]
Q = "What is the capital of France?"


def write(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_pairs_are_read_in_every_common_layout_and_bad_rows_are_named(tmp_path):
    user = [{"role": "user", "content": Q}]
    expected = {"messages": user, "chosen": "Paris.", "rejected": "London."}
    layouts = {
        "trl standard": {"prompt": Q, "chosen": "Paris.", "rejected": "London."},
        "trl conversational": {
            "prompt": user,
            "chosen": [{"role": "assistant", "content": "Paris."}],
            "rejected": [{"role": "assistant", "content": "London."}],
        },
        "ultrafeedback (implicit prompt)": {
            "prompt_id": "x",
            "chosen": [*user, {"role": "assistant", "content": "Paris."}],
            "rejected": [*user, {"role": "assistant", "content": "London."}],
        },
        "anthropic hh": {
            "chosen": f"\n\nHuman: {Q}\n\nAssistant: Paris.",
            "rejected": f"\n\nHuman: {Q}\n\nAssistant: London.",
        },
        "llama-factory sharegpt": {
            "conversations": [{"from": "human", "value": Q}],
            "chosen": {"from": "gpt", "value": "Paris."},
            "rejected": {"from": "gpt", "value": "London."},
        },
        "orca pairs": {"question": Q, "chosen": "Paris.", "rejected": "London."},
        "alpaca pairs": {"instruction": Q, "input": "", "chosen": "Paris.", "rejected": "London."},
    }
    for name, row in layouts.items():
        form, rows = load_examples(write(tmp_path / "one.jsonl", [row]))
        assert (form, rows) == ("preference", [expected]), name
    form, rows = load_examples(write(tmp_path / "sys.jsonl", [{"system": "Be brief.", **layouts["orca pairs"]}]))
    assert rows[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    # a CSV cell holds turns as JSON text; an answer that merely starts with a bracket stays text
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text(
        'prompt,chosen,rejected\n"[{""role"": ""user"", ""content"": ""Hi""}]",[Paris],London\n', encoding="utf-8"
    )
    assert load_examples(csv_file)[1] == [
        {"messages": [{"role": "user", "content": "Hi"}], "chosen": "[Paris]", "rejected": "London"}
    ]

    bad = write(
        tmp_path / "bad.jsonl",
        [
            layouts["trl standard"],
            {"prompt": Q, "chosen": "Paris.", "rejected": "Paris."},
            {"prompt": Q, "chosen": "", "rejected": "London."},
            {"chosen": "Paris.", "rejected": "London."},
            {
                "chosen": [*user, {"role": "assistant", "content": "a"}],
                "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "b"}],
            },
        ],
    )
    with pytest.raises(UserError) as exc:
        load_examples(bad)
    message = str(exc.value)
    assert "4 bad row(s) as preference" in message
    assert "line 2: 'chosen' and 'rejected' are the same answer" in message
    assert "line 3: 'chosen' is missing or empty" in message
    assert "line 4: 'chosen' is plain text and the row has no prompt" in message
    assert "line 5: no prompt, and 'chosen' and 'rejected' do not share the turns" in message

    # recipes: what does not go with preference tuning is refused before anything loads
    for override, refusal in [
        (["method=pretrain", "corpus=x"], "objective dpo is for full, lora or qlora finetuning"),
        (["objective=orpo"], "sft_weight is for objective: dpo"),
        (["replay.ratio=0.5"], r"replay mixes in answers to learn \(sft\)"),
    ]:
        with pytest.raises(UserError, match=refusal):
            load_recipe("smollm2-135m_dpo_cpu", parse_overrides(override))


def test_the_forgetting_guard_advises_what_applies_to_preference_runs():
    """Replay mixes in answers to learn, which pairs cannot take: DPO is told to stay nearer its reference."""
    from internlocal.train.guard import knobs, warning

    lost = [{"task": "capitals_en_qa", "metric": "exact_match", "base": 0.65, "result": 0.3, "worse": True}]
    _, dpo = load_recipe("smollm2-135m_dpo_cpu")
    assert knobs(dpo) == ["beta=0.2", "epochs=1.5", "lr=2.5e-04"]
    said = warning(lost, dpo)
    assert said is not None and "stay closer to the base (beta=0.2)" in said and "replay" not in said
    _, orpo = load_recipe("smollm2-135m_orpo_cpu")
    said = warning(lost, orpo)
    assert knobs(orpo) == ["epochs=1.5", "lr=2.5e-04"] and said is not None
    assert said.endswith("Train more gently (epochs=1.5 or lr=2.5e-04).")
    for recipe, knob in ((dpo, "beta=0.2"), (orpo, "epochs=1.5")):  # every knob named is one the recipe accepts
        key, value = knob.split("=")
        load_recipe("smollm2-135m_dpo_cpu" if recipe is dpo else "smollm2-135m_orpo_cpu", {key: float(value)})


def test_importing_pairs_counts_both_answers_and_the_preview_shows_what_is_scored(services, tmp_path, hf_model_dir):
    from internlocal.data.library import import_dataset
    from internlocal.data.rendering import preview
    from internlocal.data.tokenizer import hf_tokenizer
    from internlocal.train.packing import load_examples as load_training_examples
    from internlocal.train.preference import load_pairs

    tokenizer = hf_tokenizer(str(hf_model_dir))
    dataset = import_dataset(
        services.catalog, services.settings.home, FRENCH, validation=12, tokenizer=tokenizer, tokenizer_name="smol"
    )
    assert (dataset.form, dataset.train_rows, dataset.validation_rows) == ("preference", 48, 12)
    stats = dataset.stats
    assert stats["rows"] == 60 and stats["no_trainable_tokens"] == 0
    assert 0 < stats["tokens_trained"] < stats["tokens_total"] / 4  # only the answers, not the prompts
    train_file = str(Path(dataset.path) / "train.jsonl")

    tokens = preview(tokenizer, json.loads(Path(train_file).read_text(encoding="utf-8").splitlines()[0]))
    texts = [t for t, _ in tokens]
    assert texts[0] == "── chosen ──\n" and "\n── rejected ──\n" in texts
    split = texts.index("\n── rejected ──\n")
    scored = [
        "".join(t for t, trained in tokens[:split] if trained),
        "".join(t for t, trained in tokens[split:] if trained),
    ]
    pair = json.loads(Path(train_file).read_text(encoding="utf-8").splitlines()[0])
    assert scored == [f"{pair['chosen']}<|im_end|>\n", f"{pair['rejected']}<|im_end|>\n"]  # the answers alone

    # each objective refuses the other's data with a sentence that says what to do
    with pytest.raises(UserError, match=r"holds preference pairs .* objective: dpo or orpo"):
        load_training_examples(tokenizer, train_file, None, 128, "assistant")
    mascot = str(recipes_dir() / "data" / "internlocal_mascot.jsonl")
    with pytest.raises(UserError, match="objective dpo trains on preference pairs"):
        load_pairs(tokenizer, mascot, None, 128, "dpo")
    with pytest.raises(UserError, match="No preference pair keeps both answers within seq_len=16"):
        load_pairs(tokenizer, train_file, None, 16, "dpo")


def make_run(tmp_path: Path, hf_model_dir: Path, name: str, train_file: Path, validation_file: Path | None, **recipe):
    """A run folder for the loop itself (what the job writes), training ``recipe`` on normalized pair files."""
    run_dir = tmp_path / name
    run_dir.mkdir()
    config = {
        "recipe": Recipe.model_validate({"model": "smol", "dataset": "pairs", **recipe}).model_dump(),
        "model_path": str(hf_model_dir),
        "train_file": str(train_file),
        "validation_file": str(validation_file) if validation_file else None,
        "threads": 2,
    }
    (run_dir / "config.json").write_text(json.dumps(config))
    return run_dir


def normalized_french(tmp_path: Path) -> tuple[Path, Path]:
    """The bundled French pairs, normalized: the first 48 to train on, the last 12 held out."""
    _, rows = load_examples(FRENCH)
    return write(tmp_path / "train.jsonl", rows[:48]), write(tmp_path / "validation.jsonl", rows[48:])


def steps(run_dir: Path) -> list[dict]:
    return [e for e in events(run_dir) if e["type"] == "step"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_dpo_starts_at_log_2_and_agrees_with_trl_step_by_step(tmp_path, hf_model_dir):
    """A full finetune (no adapter initialisation to tell the two apart) of 8 pairs in one batch, three steps, on
    both sides; and an untrained adapter's first step (the policy is the reference: the loss is exactly log 2)."""
    train, _ = normalized_french(tmp_path)
    eight = write(tmp_path / "eight.jsonl", [json.loads(line) for line in train.read_text().splitlines()[:8]])
    settings = {"seq_len": 128, "micro_batch": 8, "max_steps": 3, "lr": 5e-6, "lr_scheduler": "constant"}
    ours = make_run(
        tmp_path, hf_model_dir, "full", eight, None, method="full", objective="dpo", warmup_ratio=0, **settings
    )
    proc = loop(ours)
    assert proc.wait(300) == 0, proc.stdout.read()
    baseline = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "trl_dpo.py"),
            str(hf_model_dir),
            str(eight),
            str(tmp_path / "trl.json"),
            "--steps",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert baseline.returncode == 0, baseline.stderr[-3000:]
    trl = json.loads((tmp_path / "trl.json").read_text())
    mine = steps(ours)
    assert mine[0]["loss"] == pytest.approx(math.log(2), abs=1e-5) and mine[0]["reward_margin"] == 0
    # fp32 on both sides, the same tokens scored (TRL renders the conversational pairs with the same template): the
    # differences left are summation order and attention kernels, ~1e-6 here; 1e-4 leaves room for other BLAS builds
    # while a different objective, reference or token selection would be off in the second decimal
    assert [s["loss"] for s in mine] == pytest.approx(trl["losses"], abs=1e-4)
    assert mine[1]["loss"] < mine[0]["loss"] - 0.05  # the steps did something: agreement is not trivial

    # QLoRA: the reference is the NF4 base the adapter trains on (the LoRA recipe's first step is checked end to end)
    adapter = make_run(
        tmp_path, hf_model_dir, "qlora", eight, None, method="qlora", objective="dpo", **{**settings, "max_steps": 1}
    )
    proc = loop(adapter)
    assert proc.wait(300) == 0, proc.stdout.read()
    [first] = steps(adapter)
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert first["chosen_reward"] == first["rejected_reward"] == 0  # the base with the adapter at zero is the reference
    assert (adapter / "reference_logps.json").exists()


def held_out(run_dir: Path) -> tuple[dict, dict]:
    evals = [e for e in events(run_dir) if e["type"] == "eval"]
    return evals[0], evals[-1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_orpo_teaches_the_preference_without_a_reference_model(tmp_path, hf_model_dir):
    train, validation = normalized_french(tmp_path)
    _, recipe = load_recipe("smollm2-135m_orpo_cpu")
    run_dir = make_run(
        tmp_path,
        hf_model_dir,
        "orpo",
        train,
        validation,
        **{**recipe.model_dump(exclude={"model", "dataset"}), "epochs": 2, "sample_prompts": ["What color is snow?"]},
    )
    proc = loop(run_dir)
    assert proc.wait(400) == 0, proc.stdout.read()
    assert not (run_dir / "reference_logps.json").exists()
    assert not [e for e in events(run_dir) if e["type"] == "reference"]
    before, after = held_out(run_dir)
    assert before["step"] == 0 and after["val_pairs"] == before["val_pairs"] == 12
    # the English answers start far more likely (-7.5 vs -52.7 nats on average): none of the 12 prefers French
    assert before["val_prefers_chosen"] == 0 and before["val_reward_accuracy"] == 0
    assert after["val_loss"] < before["val_loss"] and after["val_reward_margin"] > before["val_reward_margin"]
    assert after["val_reward_accuracy"] >= 0.75
    assert after["val_chosen_logp"] > before["val_chosen_logp"] + 15  # the French answers became likely
    assert "blanc" in after["samples"][0]["answer"].lower(), after["samples"]  # "La neige est blanche."


@pytest.mark.slow
@pytest.mark.timeout(900)  # DPO, merge, GGUF and Q8_0: about 3 minutes on 2 cores
def test_the_cpu_dpo_recipe_prefers_french_and_ends_as_a_model_to_chat_with(cli_env, internlocal_bin, hf_model_dir):
    subprocess.run(
        [internlocal_bin, "models", "import", str(hf_model_dir), "--name", "smol-hf"],
        env=cli_env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    out = subprocess.run(
        # the forgetting guard is what test_train checks; it would add a minute here
        [internlocal_bin, "train", "run", "smollm2-135m_dpo_cpu", "model=smol-hf", "guard.enabled=false"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=800,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    run = json.loads(
        subprocess.run(
            [internlocal_bin, "train", "runs", "--json"], env=cli_env, capture_output=True, text=True, check=True
        ).stdout
    )[0]
    result = run["summary"]
    assert run["status"] == "finished" and result["status"] == "finished"
    run_dir = Path(run["run_dir"])
    first = steps(run_dir)[0]
    assert first["reward_margin"] == 0 and first["chosen_reward"] == 0  # the untrained adapter is the reference
    before, after = held_out(run_dir)
    assert before["val_reward_margin"] == 0 and before["val_reward_accuracy"] == 0 and before["val_prefers_chosen"] == 0
    assert after["val_reward_margin"] > 2 and after["val_reward_accuracy"] >= 0.9
    # measured through the recipe's own split: 10 of the 12 held-out pairs (0 before) give French the higher
    # log-probability
    assert after["val_prefers_chosen"] * 12 >= 6, after
    assert result["held_out"]["after"] == {k: after[k] for k in result["held_out"]["after"]}  # in the run's summary
    assert "held-out pairs (12): reward margin 0.000 → " in out.stdout and "in 0/12 → " in out.stdout

    models = {
        m["name"]: m
        for m in json.loads(
            subprocess.run(
                [internlocal_bin, "models", "list", "--json"], env=cli_env, capture_output=True, text=True, check=True
            ).stdout
        )
    }
    quantized = models[result["quantized_model"]]
    assert quantized["format"] == "gguf" and quantized["quantization"] == "Q8_0"
    answer = greedy(Path(quantized["path"]), "What is the capital of France? Answer in one word.")
    assert "Paris" in answer and ("capitale" in answer or "La " in answer), answer  # in French, and still right


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.timeout(600)
def test_dpo_over_two_processes_and_after_a_stop_and_resume_gives_the_single_process_curve(tmp_path, hf_model_dir):
    """The reference pass split over ranks and summed, and read back from the run folder by a resumed run (whose
    weights are no longer the reference)."""
    from internlocal.train.process import loop_command

    train, _ = normalized_french(tmp_path)
    eight = write(tmp_path / "eight.jsonl", [json.loads(line) for line in train.read_text().splitlines()[:8]])
    settings = {"method": "lora", "objective": "dpo", "seq_len": 128, "max_steps": 3, "lr": 5e-4, "save_every": 0}
    single = make_run(tmp_path, hf_model_dir, "single", eight, None, micro_batch=4, **settings)
    proc = loop(single)
    assert proc.wait(300) == 0, proc.stdout.read()
    curve = {s["step"]: s["loss"] for s in steps(single)}
    assert sorted(curve) == [1, 2, 3] and curve[3] < curve[1]

    ddp = make_run(tmp_path, hf_model_dir, "ddp", eight, None, micro_batch=2, gpus=2, **settings)
    (ddp / "config.json").write_text(json.dumps({**json.loads((ddp / "config.json").read_text()), "threads": 1}))
    done = subprocess.run(loop_command(ddp, 2, resume=False), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert {s["step"]: s["loss"] for s in steps(ddp)} == pytest.approx(curve, rel=1e-4)
    saved = json.loads((ddp / "reference_logps.json").read_text())
    assert saved == pytest.approx(json.loads((single / "reference_logps.json").read_text()), rel=1e-6)

    stopped = make_run(tmp_path, hf_model_dir, "stopped", eight, None, micro_batch=4, **settings)
    (stopped / "STOP").touch()  # checkpoint after the first step and exit
    proc = loop(stopped)
    assert proc.wait(300) == 0, proc.stdout.read()
    assert [s["step"] for s in steps(stopped)] == [1]
    proc = loop(stopped, "--resume")
    assert proc.wait(300) == 0, proc.stdout.read()
    assert {s["step"]: s["loss"] for s in steps(stopped)} == pytest.approx(curve, rel=1e-4)
    [reference] = [e for e in events(stopped) if e["type"] == "reference"]
    assert reference["computed"] is False  # read back from the run folder, not recomputed from trained weights
