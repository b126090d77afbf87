"""Evaluation: scoring on the embedded model, the request cache, custom tasks, and bad task files."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from internlocal.errors import UserError
from internlocal.evals.runner import RequestCache, evaluate
from internlocal.evals.tasks import add_custom_task, get_task, load_task


def write_task(tmp_path: Path, rows: list[dict], **spec) -> Path:
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    spec = {"name": "t", "version": "1", "dataset": "data.jsonl", **spec}
    path = tmp_path / "task.yaml"
    import yaml

    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    return path


class Stop(Exception):
    pass


def test_known_answers_score_as_expected(engine, services):
    task = get_task("capitals_en")
    outcome = evaluate(engine, task, RequestCache(services.catalog, "test-known"))
    assert outcome.metrics["acc"] >= 0.9  # the embedded model knows these capitals (37/40)
    assert 0 < outcome.stderr["acc"] < 0.1
    assert len(outcome.items) == 40 and outcome.requests == 160


def test_acc_and_acc_norm_by_hand(engine, tmp_path):
    rows = [
        {"q": "The capital of France is", "choices": ["Paris", "London", "a very long wrong answer indeed"], "a": 0},
        {"q": "The capital of Japan is", "choices": ["Berlin", "Tokyo"], "a": 1},
    ]
    task = load_task(
        write_task(
            tmp_path,
            rows,
            output_type="multiple_choice",
            doc_to_text="{q}",
            doc_to_choice="{choices}",
            doc_to_target="{a}",
        )
    )
    outcome = evaluate(engine, task, RequestCache(None, "x"))
    expected_acc, expected_norm = [], []
    for row in rows:
        lls = [r.logprob for r in engine.loglikelihood([(row["q"], " " + c) for c in row["choices"]])]
        expected_acc.append(max(range(len(lls)), key=lls.__getitem__) == row["a"])
        norm = [ll / len(c) for ll, c in zip(lls, row["choices"], strict=True)]
        expected_norm.append(max(range(len(norm)), key=norm.__getitem__) == row["a"])
    assert outcome.metrics["acc"] == sum(expected_acc) / 2
    assert outcome.metrics["acc_norm"] == sum(expected_norm) / 2
    assert [round(x, 4) for x in outcome.items[0]["scores"]["loglikelihoods"]] == [
        round(r.logprob, 4) for r in engine.loglikelihood([(rows[0]["q"], " " + c) for c in rows[0]["choices"]])
    ]


def test_exact_match_with_extraction(engine, services):
    outcome = evaluate(engine, get_task("capitals_en_qa"), RequestCache(services.catalog, "qa"), limit=3)
    first = outcome.items[0]
    assert (
        first["target"] == "Paris" and first["scores"]["extracted"] == "Paris" and first["scores"]["exact_match"] == 1.0
    )
    assert outcome.metrics["exact_match"] == sum(i["scores"]["exact_match"] for i in outcome.items) / 3


def test_perplexity_matches_an_independent_computation(engine, hf_model_dir, tmp_path):
    """Our perplexity (through the transformers engine) equals exp(mean NLL) computed directly with
    transformers within 1 %; the llama.cpp backend on the GGUF agrees within 5 % (its quantized
    kernels also quantize activations, which moves per-token log-probabilities slightly)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from internlocal.engines.transformers_engine import TransformersEngine

    text = (
        "The lighthouse stood at the end of the rocky point, "
        "and every night its lamp turned slowly over the dark water."
    )
    task = load_task(write_task(tmp_path, [{"text": text}], output_type="perplexity"))
    tokenizer = AutoTokenizer.from_pretrained(hf_model_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_model_dir)
    ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1]
    nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="mean").item()

    with TransformersEngine(hf_model_dir, n_ctx=1024) as hf_engine:
        ours = evaluate(hf_engine, task, RequestCache(None, "ppl-hf"))
    assert ours.metrics["token_perplexity"] == pytest.approx(math.exp(nll), rel=0.01)
    assert ours.metrics["bits_per_byte"] == pytest.approx(
        nll * (len(ids) - 1) / len(text.encode()) / math.log(2), rel=0.01
    )
    assert ours.metrics["word_perplexity"] == pytest.approx(
        math.exp(nll * (len(ids) - 1) / len(text.split())), rel=0.01
    )
    gguf = evaluate(engine, task, RequestCache(None, "ppl-gguf"))
    assert gguf.metrics["token_perplexity"] == pytest.approx(math.exp(nll), rel=0.05)


def test_a_killed_run_resumes_from_the_cache_with_identical_totals(engine, services):
    task = get_task("capitals_en")
    fresh = evaluate(engine, task, RequestCache(services.catalog, "fresh"))
    cache = RequestCache(services.catalog, "interrupted")
    calls = {"n": 0}

    def die_after_two_batches() -> None:
        calls["n"] += 1
        if calls["n"] > 2:
            raise Stop()

    with pytest.raises(Stop):
        evaluate(engine, task, cache, check_cancelled=die_after_two_batches)
    resumed = evaluate(engine, task, cache)
    assert resumed.cached == 64 and resumed.requests == 160  # two batches of 32 were already answered
    assert resumed.metrics == fresh.metrics
    assert [i["scores"] for i in resumed.items] == [i["scores"] for i in fresh.items]


def test_items_too_long_for_the_context_are_skipped_and_counted(gguf_path, tmp_path):
    from internlocal.engines.llamacpp import LlamaCppEngine

    rows = [
        {"q": "The capital of France is", "c": ["Paris", "Rome"], "a": 0},
        {"q": "word " * 400 + "The capital of Italy is", "c": ["Paris", "Rome"], "a": 1},
    ]
    task = load_task(
        write_task(
            tmp_path, rows, output_type="multiple_choice", doc_to_text="{q}", doc_to_choice="{c}", doc_to_target="{a}"
        )
    )
    (tmp_path / "qa").mkdir()
    qa = load_task(
        write_task(
            tmp_path / "qa",
            [
                {"q": "What is the capital of France? Answer in one word.", "a": "Paris"},
                {"q": "word " * 400 + "What is the capital of Italy? Answer in one word.", "a": "Rome"},
            ],
            output_type="generate_until",
            doc_to_text="{q}",
            doc_to_target="{a}",
            until=["\n"],
            apply_chat_template=True,
            filter={"regex": r"([A-Z][a-z]+)\.?\s*$", "group": 1},
        )
    )
    with LlamaCppEngine(gguf_path, n_ctx=256) as small:
        outcome = evaluate(small, task, RequestCache(None, "short"))
        generated = evaluate(small, qa, RequestCache(None, "short-qa"))
    # counted, and reported with the item: which one, and why
    assert outcome.skipped == 1 and [i["idx"] for i in outcome.items] == [0, 1]
    assert outcome.metrics["acc"] == 1.0  # over the one item asked: France → Paris
    assert re.fullmatch(r"the prompt has \d+ tokens; the context holds 256", outcome.items[1]["scores"]["skipped"])
    assert outcome.items[1]["response"] is None and outcome.items[1]["target"] == "Rome"
    assert generated.skipped == 1 and generated.items[0]["scores"]["exact_match"] == 1.0
    assert "the context holds 256" in generated.items[1]["scores"]["skipped"]


def test_choices_are_scored_by_log_likelihood_and_per_character():
    """Hand-checked: per character the second choice (-0.5) beats the first (-1.0), while in total the
    first (-2.0) wins; ties go to the first of the tied choices."""
    from internlocal.evals.runner import score_choices

    assert score_choices([-2.0, -3.0, -4.5], ["ab", "abcdef", "abcdefghi"], gold=1) == (0, 1, False, True)
    assert score_choices([-2.0, -3.0, -4.5], ["ab", "abcdef", "abcdefghi"], gold=0) == (0, 1, True, False)
    assert score_choices([-1.0, -1.0], ["x", "y"], gold=0) == (0, 0, True, True)


def test_few_shot_prompts_are_seeded_and_change_the_prompt_hash(tmp_path):
    rows = [{"q": f"Question {n}?", "a": f"answer {n}"} for n in range(5)]
    spec = dict(output_type="generate_until", doc_to_text="{q}\nA:", doc_to_target="{a}")
    zero = load_task(write_task(tmp_path, rows, **spec))
    two = load_task(write_task(tmp_path, rows, num_fewshot=2, **spec))
    assert zero.fewshot_prefix(0) == "" and zero.prompt_hash() != two.prompt_hash()
    prefix = two.fewshot_prefix(3)
    shots = prefix.split("\n\n")[:-1]
    assert len(shots) == 2 and prefix.endswith("\n\n") and "Question 3?" not in prefix
    assert all(re.fullmatch(r"Question (\d)\?\nA: answer \1", shot) for shot in shots)
    assert two.fewshot_prefix(3) == prefix  # the same examples every run (seeded per item)
    assert two.model_copy(update={"fewshot_seed": 99}).prompt_hash() != two.prompt_hash()


def test_multiple_choice_through_the_chat_template(engine):
    task = get_task("capitals_en").model_copy(update={"apply_chat_template": True})
    assert task.prompt_hash() != get_task("capitals_en").prompt_hash()
    outcome = evaluate(engine, task, RequestCache(None, "mc-chat"))
    first = outcome.items[0]["prompt"]
    assert "<|im_start|>user\nQuestion: What is the capital of France?" in first and first.endswith(
        "<|im_start|>assistant\n"
    )
    assert outcome.metrics["acc"] >= 0.9  # 37/40 through the template, as without


def test_perplexity_reports_a_bootstrap_standard_error(engine):
    outcome = evaluate(engine, get_task("sample_text"), RequestCache(None, "ppl-se"))
    assert set(outcome.stderr) == set(outcome.metrics)
    assert 0 < outcome.stderr["token_perplexity"] < outcome.metrics["token_perplexity"]
    assert outcome.stderr == evaluate(engine, get_task("sample_text"), RequestCache(None, "ppl-se2")).stderr  # seeded


def test_bad_task_files_name_the_file_and_line(tmp_path):
    (tmp_path / "broken.yaml").write_text("name: [unclosed")
    with pytest.raises(UserError, match=r"broken\.yaml is not valid YAML"):
        load_task(tmp_path / "broken.yaml")
    (tmp_path / "wrong.yaml").write_text("name: t\nversion: '1'\noutput_type: essay\ndataset: d.jsonl\n")
    with pytest.raises(UserError, match=r"wrong\.yaml is invalid: output_type"):
        load_task(tmp_path / "wrong.yaml")
    path = write_task(
        tmp_path,
        [{"q": "x", "c": ["a", "b"], "a": 0}],
        output_type="multiple_choice",
        doc_to_text="{q}",
        doc_to_choice="{c}",
        doc_to_target="{a}",
    )
    with (tmp_path / "data.jsonl").open("a") as fh:
        fh.write("{not json\n")
    with pytest.raises(UserError, match=r"data.jsonl line 2: not valid JSON"):
        _ = load_task(path).docs
    path = write_task(
        tmp_path,
        [{"q": "x", "c": ["a", "b"], "a": "z"}],
        output_type="multiple_choice",
        doc_to_text="{q}",
        doc_to_choice="{c}",
        doc_to_target="{a}",
    )
    with pytest.raises(UserError, match="row 1: the answer 'z' is not one of the choices"):
        load_task(path).gold_index(load_task(path).docs[0], 0)


def test_custom_mcq_task_from_csv(services, engine, tmp_path):
    csv_file = tmp_path / "quiz.csv"
    csv_file.write_text(
        "question,A,B,C,D,answer\nWhat is the capital of France?,Berlin,Paris,Rome,Madrid,B\n"
        "What is the capital of Japan?,Tokyo,Oslo,Cairo,Lima,A\n",
        encoding="utf-8",
    )
    add_custom_task(services.settings.home, "my_quiz", csv_file, "mcq")
    task = get_task("my_quiz", services.settings.home)
    outcome = evaluate(engine, task, RequestCache(None, "quiz"))
    assert len(outcome.items) == 2 and 0 <= outcome.metrics["acc"] <= 1
    bad = tmp_path / "bad.csv"
    bad.write_text("question,A,B,C,D,answer\nQ?,a,b,c,d,E\n")
    with pytest.raises(UserError, match="row 1: the answer 'E' is not one of A, B, C, D"):
        add_custom_task(services.settings.home, "bad", bad, "mcq")


def test_cli_runs_two_models_and_the_leaderboard_exports(internlocal_bin, cli_env, gguf_path, tmp_path):
    def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run([internlocal_bin, *args], env=cli_env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 or not check, out.stderr
        return out

    # the same weights under a second name: its answers come from the request cache, keyed by sha256
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(gguf_path, copy)
    cli("models", "import", str(copy), "--name", "smollm2-copy")
    out = cli(
        "eval",
        "run",
        "smollm2-135m-instruct-q4_1,smollm2-copy",
        "capitals_en",
        "capitals_zh",
        "sample_text",
        "--limit",
        "6",
    )
    assert "smollm2-copy  capitals_en" in out.stdout and "acc" in out.stdout
    board = json.loads(cli("eval", "results", "--json").stdout)

    # rescoring needs no model: with the copy's file gone, a re-run of answered requests still works
    copy.unlink()
    again = cli("eval", "run", "smollm2-copy", "capitals_en", "capitals_zh", "sample_text", "--limit", "6", "--json")
    assert "the model was not loaded" in again.stdout
    rerun = {
        r["task"]: r["scores"]["smollm2-copy"]["value"]
        for r in json.loads(cli("eval", "results", "--json").stdout)["rows"]
    }
    assert rerun == {r["task"]: r["scores"]["smollm2-copy"]["value"] for r in board["rows"]}
    unanswered = cli("eval", "run", "smollm2-copy", "capitals_en_qa", "--limit", "2", check=False)
    assert unanswered.returncode == 3 and "smollm2-copy is gone" in unanswered.stderr  # the job failed
    assert board["models"] == ["smollm2-135m-instruct-q4_1", "smollm2-copy"]
    rows = {r["task"]: r for r in board["rows"]}
    assert set(rows) == {"capitals_en", "capitals_zh", "sample_text"}
    en, zh = rows["capitals_en"]["scores"], rows["capitals_zh"]["scores"]
    assert (
        rows["capitals_en"]["metric"] == "acc"
        and rows["capitals_en"]["limit"] == 6
        and rows["capitals_en"]["group"] == "samples"
    )
    assert en["smollm2-copy"]["value"] == en["smollm2-135m-instruct-q4_1"]["value"] >= 5 / 6  # Paris, Tokyo, … known
    assert rows["sample_text"]["metric"] == "token_perplexity"
    [average] = board["groups"]  # acc over the two capitals tasks; perplexity is not averaged with accuracy
    assert average["metric"] == "acc" and average["rows"] == 2
    assert math.isclose(
        average["values"]["smollm2-copy"], (en["smollm2-copy"]["value"] + zh["smollm2-copy"]["value"]) / 2
    )
    md = cli("eval", "results", "--format", "md").stdout.splitlines()
    assert md[0] == "| task | metric | smollm2-135m-instruct-q4_1 | smollm2-copy |"
    assert any(line.startswith("| **samples average (2 tasks, first 6 items)** | acc |") for line in md)
    csv_rows = cli("eval", "results", "--format", "csv").stdout.splitlines()
    assert csv_rows[0].startswith("task,model,metric,value,stderr") and len(csv_rows) == 1 + 3 * 2 + 2
    assert "capitals_en" in cli("eval", "results").stdout
    bad = cli("eval", "results", "--format", "xml", check=False)
    assert bad.returncode == 1 and "use text, md, csv or json" in bad.stderr
    missing = cli("eval", "run", "smollm2-copy,no-such-model", "capitals_en", check=False)
    assert missing.returncode == 1 and "no-such-model" in missing.stderr


def _run(
    catalog,
    model: str,
    task: str,
    value: float,
    prompt: str = "p1",
    limit: int | None = None,
    group: str | None = "quiz",
    metric: str = "acc",
):
    from internlocal.catalog.schema import EvalRun

    return catalog.add_eval_run(
        EvalRun(
            model_name=model,
            task=task,
            task_version="1",
            prompt_hash=prompt,
            n_items=10,
            metrics_json=json.dumps({metric: value}),
            stderr_json=json.dumps({metric: 0.1}),
            config_json=json.dumps({"limit": limit, "group": group}),
        ),
        [],
    )


def test_leaderboard_puts_only_like_for_like_scores_side_by_side(services):
    from internlocal.evals.leaderboard import build_from_catalog

    catalog = services.catalog
    _run(catalog, "base", "geo", 0.5)
    _run(catalog, "base", "geo", 0.6)  # a later run of the same variant replaces the earlier one
    _run(catalog, "tuned", "geo", 0.8)
    _run(catalog, "base", "hist", 0.4)
    _run(catalog, "tuned", "hist", 0.6)
    _run(catalog, "quant", "geo", 0.7)  # no hist score: no average for it
    _run(catalog, "tuned", "geo", 0.9, prompt="p2")  # another prompt: its own row, never beside p1's scores
    _run(catalog, "base", "geo", 1.0, limit=4)  # a smoke run: its own row too, kept out of the full-run average
    board = build_from_catalog(catalog)
    assert board.models == ["base", "quant", "tuned"]
    labels = {r.label: {m: s.value for m, s in r.scores.items()} for r in board.rows}
    assert labels == {
        "geo [prompt p1, all items]": {"base": 0.6, "tuned": 0.8, "quant": 0.7},
        "geo [prompt p2, all items]": {"tuned": 0.9},
        "geo [prompt p1, first 4]": {"base": 1.0},
        "hist": {"base": 0.4, "tuned": 0.6},
    }
    [full] = [g for g in board.groups if g.limit is None]
    # newest full-run variant of geo (prompt p2) is the one averaged: only "tuned" has it and hist
    assert full.rows == 2 and full.values == {"base": None, "quant": None, "tuned": pytest.approx(0.75)}
    assert [g for g in board.groups if g.limit == 4] == []  # one task only: no average
    text = board.to_text()
    assert "quiz average (2 tasks)" in text and "0.7500" in text
    assert json.loads(board.to_json())["rows"][0]["scores"]


def test_leaderboard_averages_a_group_per_metric(services):
    from internlocal.evals.leaderboard import build_from_catalog

    catalog = services.catalog
    for task, value in (("a", 0.2), ("b", 0.4), ("c", 0.9)):
        _run(catalog, "m", task, value)
    _run(catalog, "m", "text", 12.5, metric="token_perplexity")
    _run(catalog, "m", "loose", 0.3, group=None)  # a run that recorded no group: "other"
    board = build_from_catalog(catalog)
    [quiz] = board.groups
    assert (quiz.group, quiz.metric, quiz.rows) == ("quiz", "acc", 3) and quiz.values["m"] == pytest.approx(0.5)
    assert {r.task: r.group for r in board.rows}["loose"] == "other"


def test_a_killed_eval_job_resumes_with_the_totals_of_an_uninterrupted_run(services, engine):
    import os
    import signal
    import time

    from internlocal.evals.job import run_eval

    tasks = ["capitals_en", "capitals_en_qa"]
    runner = services.jobs
    job = runner.submit(
        run_eval, {"model": "smollm2-135m-instruct-q4_1", "tasks": tasks, "limit": 12}, kind="eval.run", title="eval"
    )
    deadline = time.monotonic() + 180
    while True:  # kill -9 in the middle of the second task (the first is stored, the second half answered)
        progress = [e for e in runner.read_events(job.id)[0] if e["type"] == "progress"]
        if progress and 1.2 <= progress[-1]["done"] < 2:
            break
        assert time.monotonic() < deadline and runner.refresh_one(services.catalog.get_job(job.id)).status in (
            "queued",
            "running",
        )
        time.sleep(0.05)
    os.kill(job.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while runner.refresh_one(services.catalog.get_job(job.id)).status != "interrupted":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    runner.resume(job.id)
    job = runner.wait(job.id, timeout=300)
    assert job.status == "succeeded", job.error

    runs = services.catalog.eval_runs(job_id=job.id)
    assert sorted(r.task for r in runs) == sorted(tasks)  # the finished task was kept, not evaluated twice
    for run in runs:  # the same totals as a run that was never stopped, without any cache
        fresh = evaluate(engine, get_task(run.task), RequestCache(None, "uninterrupted"), limit=12)
        assert run.metrics == pytest.approx(fresh.metrics, rel=1e-6) and run.n_items == len(fresh.items)


def test_builtin_sample_tasks_load_and_chinese_answers_are_extracted():
    from internlocal.evals.tasks import all_tasks

    tasks = all_tasks()
    assert {"capitals_en", "capitals_zh", "capitals_en_qa", "capitals_zh_qa", "sample_text", "sample_text_zh"} <= set(
        tasks
    )
    assert all(len(t.docs) >= 6 and t.group == "samples" for t in tasks.values())
    qa = tasks["capitals_zh_qa"]
    target = qa.target(qa.docs[0])
    assert target == "巴黎"
    for said, right in (
        ("巴黎", True),
        ("法国的首都是巴黎。", True),
        ("巴黎市", True),
        ("伦敦", False),
        ("Paris", False),
    ):
        assert (qa.normalize(qa.extract(said)) == target) is right, said
