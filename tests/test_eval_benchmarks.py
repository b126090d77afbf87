"""Standard benchmark loaders on fixture files written in exactly their published formats."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from internlocal.errors import UserError
from internlocal.evals.benchmarks import import_benchmark
from internlocal.evals.runner import RequestCache, evaluate
from internlocal.evals.tasks import load_task


def jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def test_mmlu_csv_and_jsonl(tmp_path, engine):
    folder = tmp_path / "mmlu" / "data" / "test"
    folder.mkdir(parents=True)
    with (folder / "high_school_geography_test.csv").open("w", newline="") as fh:  # hendrycks: no header
        csv.writer(fh).writerows([["What is the capital of France?", "Berlin", "Paris", "Rome", "Madrid", "B"],
                                  ["Which ocean is the largest?", "Atlantic", "Indian", "Pacific", "Arctic", "C"]])
    jsonl(tmp_path / "mmlu" / "cais" / "astronomy.jsonl",
          [{"question": "Which planet is closest to the Sun?", "subject": "astronomy",
            "choices": ["Mercury", "Venus", "Earth", "Mars"], "answer": 0}])
    task = load_task(import_benchmark(tmp_path / "home", "mmlu", tmp_path / "mmlu"))
    assert len(task.docs) == 3 and task.version == "mmlu-1"
    first = task.docs[0]
    assert task.text(first).startswith("The following are multiple choice questions (with answers) about astronomy.")
    assert task.choices(first) == ["A", "B", "C", "D"] and task.gold_index(first, 0) == 0
    outcome = evaluate(engine, task, RequestCache(None, "mmlu"))
    assert len(outcome.items) == 3 and 0 <= outcome.metrics["acc"] <= 1


def test_ceval_and_cmmlu_csv(tmp_path):
    ceval = tmp_path / "ceval" / "val"
    ceval.mkdir(parents=True)
    (ceval / "computer_network_val.csv").write_text(
        "id,question,A,B,C,D,answer,explanation\n0,TCP 属于哪一层？,应用层,传输层,网络层,链路层,B,\n", encoding="utf-8")
    task = load_task(import_benchmark(tmp_path / "home", "ceval", tmp_path / "ceval"))
    assert "计算机" not in task.text(task.docs[0]) and "computer network" in task.text(task.docs[0])
    assert task.gold_index(task.docs[0], 0) == 1
    cmmlu = tmp_path / "cmmlu" / "test"
    cmmlu.mkdir(parents=True)
    (cmmlu / "agronomy.csv").write_text(",Question,A,B,C,D,Answer\n0,水稻属于哪一科？,禾本科,豆科,茄科,十字花科,A\n",
                                        encoding="utf-8")
    task = load_task(import_benchmark(tmp_path / "home", "cmmlu", tmp_path / "cmmlu"))
    assert task.text(task.docs[0]).endswith("答案：") and task.gold_index(task.docs[0], 0) == 0
    (cmmlu / "agronomy.csv").write_text(",Question,A,B,C,D,Answer\n0,问？,a,b,c,d,E\n", encoding="utf-8")
    with pytest.raises(UserError, match="agronomy.csv line 2: the answer must be one of A, B, C, D"):
        import_benchmark(tmp_path / "home", "cmmlu", tmp_path / "cmmlu")


def test_arc_hellaswag_truthfulqa(tmp_path):
    jsonl(tmp_path / "arc" / "ARC-Easy-Test.jsonl", [{"id": "x", "question": "Which is a mammal?",
          "choices": {"text": ["shark", "whale", "trout"], "label": ["A", "B", "C"]}, "answerKey": "B"}])
    task = load_task(import_benchmark(tmp_path / "home", "arc", tmp_path / "arc", name="arc_easy"))
    assert task.choices(task.docs[0]) == ["shark", "whale", "trout"] and task.gold_index(task.docs[0], 0) == 1
    jsonl(tmp_path / "hs" / "hellaswag_val.jsonl", [{"ind": 4, "activity_label": "Removing ice from car",
          "ctx_a": "Then, the man writes over the snow covering the window of a car.", "ctx_b": "a woman",
          "endings": ["[header] stands by.", "climbs in.", "walks away.", "sits down."], "label": "3"}])
    task = load_task(import_benchmark(tmp_path / "home", "hellaswag", tmp_path / "hs"))
    assert task.text(task.docs[0]) == "Removing ice from car: Then, the man writes over the snow covering the window of a car. A woman"
    # lm-evaluation-harness strips before removing "[header]", so a leading space stays: mirrored exactly
    assert task.choices(task.docs[0])[0] == " stands by." and task.gold_index(task.docs[0], 0) == 3
    jsonl(tmp_path / "tqa" / "mc.jsonl", [{"question": "What happens if you crack your knuckles?",
          "mc1_targets": {"choices": ["Nothing in particular", "Arthritis"], "labels": [1, 0]}}])
    task = load_task(import_benchmark(tmp_path / "home", "truthfulqa_mc1", tmp_path / "tqa"))
    assert task.gold_index(task.docs[0], 0) == 0


def test_gsm8k_and_wikitext(tmp_path, engine):
    jsonl(tmp_path / "gsm8k" / "test.jsonl", [{"question": "Tom has 2 apples and buys 3 more. How many apples?",
          "answer": "Tom has 2 + 3 = <<2+3=5>>5 apples.\n#### 5"}])
    task = load_task(import_benchmark(tmp_path / "home", "gsm8k", tmp_path / "gsm8k"))
    assert task.target(task.docs[0]) == "5" and task.output_type == "generate_until"
    outcome = evaluate(engine, task, RequestCache(None, "gsm"))
    assert len(outcome.items) == 1 and "extracted" in outcome.items[0]["scores"]
    (tmp_path / "wiki").mkdir()
    (tmp_path / "wiki" / "wiki.test.raw").write_text(
        " = Valkyria Chronicles III = \n\n Senjō no Valkyria 3 is a tactical role playing game .\n\n"
        " = Tower Building of the Little Rock Arsenal = \n\n The building is a historic site .\n", encoding="utf-8")
    task = load_task(import_benchmark(tmp_path / "home", "wikitext", tmp_path / "wiki"))
    assert len(task.docs) == 2 and task.docs[1]["text"].startswith("= Tower Building")
    outcome = evaluate(engine, task, RequestCache(None, "wiki"))
    assert outcome.metrics["word_perplexity"] > 1 and outcome.metrics["bits_per_byte"] > 0


def test_unknown_benchmark_or_empty_folder(tmp_path):
    with pytest.raises(UserError, match="Unknown benchmark"):
        import_benchmark(tmp_path, "superglue", tmp_path)
    with pytest.raises(UserError, match="No \\*_test.csv or \\*.jsonl files"):
        import_benchmark(tmp_path, "mmlu", tmp_path)
