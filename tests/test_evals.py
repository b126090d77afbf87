"""Evaluation: scoring on the embedded model, the request cache, custom tasks, and bad task files."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from internlocal.evals.runner import RequestCache, evaluate
from internlocal.evals.tasks import add_custom_task, get_task, load_task
from internlocal.errors import UserError


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
    assert outcome.metrics["acc"] >= 0.9  # the embedded model knows these capitals (23/24)
    assert 0 < outcome.stderr["acc"] < 0.1
    assert len(outcome.items) == 24 and outcome.requests == 96


def test_acc_and_acc_norm_by_hand(engine, tmp_path):
    rows = [{"q": "The capital of France is", "choices": ["Paris", "London", "a very long wrong answer indeed"], "a": 0},
            {"q": "The capital of Japan is", "choices": ["Berlin", "Tokyo"], "a": 1}]
    task = load_task(write_task(tmp_path, rows, output_type="multiple_choice", doc_to_text="{q}",
                                doc_to_choice="{choices}", doc_to_target="{a}"))
    outcome = evaluate(engine, task, RequestCache(None, "x"))
    expected_acc, expected_norm = [], []
    for row in rows:
        lls = [r.logprob for r in engine.loglikelihood([(row["q"], " " + c) for c in row["choices"]])]
        expected_acc.append(max(range(len(lls)), key=lls.__getitem__) == row["a"])
        norm = [ll / len(c) for ll, c in zip(lls, row["choices"])]
        expected_norm.append(max(range(len(norm)), key=norm.__getitem__) == row["a"])
    assert outcome.metrics["acc"] == sum(expected_acc) / 2
    assert outcome.metrics["acc_norm"] == sum(expected_norm) / 2
    assert [round(x, 4) for x in outcome.items[0]["scores"]["loglikelihoods"]] == \
        [round(r.logprob, 4) for r in engine.loglikelihood([(rows[0]["q"], " " + c) for c in rows[0]["choices"]])]


def test_exact_match_with_extraction(engine, services):
    outcome = evaluate(engine, get_task("capitals_en_qa"), RequestCache(services.catalog, "qa"), limit=3)
    first = outcome.items[0]
    assert first["target"] == "Paris" and first["scores"]["extracted"] == "Paris" and first["scores"]["exact_match"] == 1.0
    assert outcome.metrics["exact_match"] == sum(i["scores"]["exact_match"] for i in outcome.items) / 3


def test_perplexity_matches_an_independent_computation(engine, hf_model_dir, tmp_path):
    """Our perplexity (through the transformers engine) equals exp(mean NLL) computed directly with
    transformers within 1 %; the llama.cpp backend on the GGUF agrees within 5 % (its quantized
    kernels also quantize activations, which moves per-token log-probabilities slightly)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from internlocal.engines.transformers_engine import TransformersEngine

    text = "The lighthouse stood at the end of the rocky point, and every night its lamp turned slowly over the dark water."
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
    assert ours.metrics["bits_per_byte"] == pytest.approx(nll * (len(ids) - 1) / len(text.encode()) / math.log(2), rel=0.01)
    assert ours.metrics["word_perplexity"] == pytest.approx(math.exp(nll * (len(ids) - 1) / len(text.split())), rel=0.01)
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
    assert resumed.cached == 64 and resumed.requests == 96  # two batches of 32 were already answered
    assert resumed.metrics == fresh.metrics
    assert [i["scores"] for i in resumed.items] == [i["scores"] for i in fresh.items]


def test_items_too_long_for_the_context_are_skipped_and_counted(gguf_path, tmp_path):
    from internlocal.engines.llamacpp import LlamaCppEngine

    rows = [{"q": "The capital of France is", "c": ["Paris", "Rome"], "a": 0},
            {"q": "word " * 400 + "The capital of Italy is", "c": ["Paris", "Rome"], "a": 1}]
    task = load_task(write_task(tmp_path, rows, output_type="multiple_choice", doc_to_text="{q}", doc_to_choice="{c}",
                                doc_to_target="{a}"))
    with LlamaCppEngine(gguf_path, n_ctx=256) as small:
        outcome = evaluate(small, task, RequestCache(None, "short"))
    assert outcome.skipped == 1 and len(outcome.items) == 1


def test_bad_task_files_name_the_file_and_line(tmp_path):
    (tmp_path / "broken.yaml").write_text("name: [unclosed")
    with pytest.raises(UserError, match="broken.yaml is not valid YAML"):
        load_task(tmp_path / "broken.yaml")
    (tmp_path / "wrong.yaml").write_text("name: t\nversion: '1'\noutput_type: essay\ndataset: d.jsonl\n")
    with pytest.raises(UserError, match="wrong.yaml is invalid: output_type"):
        load_task(tmp_path / "wrong.yaml")
    path = write_task(tmp_path, [{"q": "x", "c": ["a", "b"], "a": 0}], output_type="multiple_choice",
                      doc_to_text="{q}", doc_to_choice="{c}", doc_to_target="{a}")
    with (tmp_path / "data.jsonl").open("a") as fh:
        fh.write("{not json\n")
    with pytest.raises(UserError, match=r"data.jsonl line 2: not valid JSON"):
        _ = load_task(path).docs
    path = write_task(tmp_path, [{"q": "x", "c": ["a", "b"], "a": "z"}], output_type="multiple_choice",
                      doc_to_text="{q}", doc_to_choice="{c}", doc_to_target="{a}")
    with pytest.raises(UserError, match="row 1: the answer 'z' is not one of the choices"):
        load_task(path).gold_index(load_task(path).docs[0], 0)


def test_custom_mcq_task_from_csv(services, engine, tmp_path):
    csv_file = tmp_path / "quiz.csv"
    csv_file.write_text("question,A,B,C,D,answer\nWhat is the capital of France?,Berlin,Paris,Rome,Madrid,B\n"
                        "What is the capital of Japan?,Tokyo,Oslo,Cairo,Lima,A\n", encoding="utf-8")
    add_custom_task(services.settings.home, "my_quiz", csv_file, "mcq")
    task = get_task("my_quiz", services.settings.home)
    outcome = evaluate(engine, task, RequestCache(None, "quiz"))
    assert len(outcome.items) == 2 and 0 <= outcome.metrics["acc"] <= 1
    bad = tmp_path / "bad.csv"
    bad.write_text("question,A,B,C,D,answer\nQ?,a,b,c,d,E\n")
    with pytest.raises(UserError, match="row 1: the answer 'E' is not one of A, B, C, D"):
        add_custom_task(services.settings.home, "bad", bad, "mcq")


def test_cli_run_and_leaderboard(internlocal_bin, cli_env):
    out = subprocess.run([internlocal_bin, "eval", "run", "smollm2-135m-instruct-q4_1", "capitals_en", "sample_text",
                          "--limit", "6"], env=cli_env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "capitals_en" in out.stdout and "acc" in out.stdout
    board = json.loads(subprocess.run([internlocal_bin, "eval", "results", "--json"], env=cli_env, capture_output=True,
                                      text=True, timeout=60).stdout)
    cell = board["capitals_en"]["smollm2-135m-instruct-q4_1"]
    assert cell["metric"] == "acc" and 0 <= cell["value"] <= 1 and cell["comparable"]
    assert board["sample_text"]["smollm2-135m-instruct-q4_1"]["metric"] == "token_perplexity"
    md = subprocess.run([internlocal_bin, "eval", "results", "--format", "md"], env=cli_env, capture_output=True, text=True).stdout
    assert md.splitlines()[0] == "| task | smollm2-135m-instruct-q4_1 |" and "| capitals_en | acc " in md
    rows = subprocess.run([internlocal_bin, "eval", "results", "--format", "csv"], env=cli_env, capture_output=True, text=True).stdout
    assert rows.splitlines()[0].startswith("task,model,metric,value,stderr")
