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
        csv.writer(fh).writerows(
            [
                ["What is the capital of France?", "Berlin", "Paris", "Rome", "Madrid", "B"],
                ["Which ocean is the largest?", "Atlantic", "Indian", "Pacific", "Arctic", "C"],
            ]
        )
    jsonl(
        tmp_path / "mmlu" / "cais" / "astronomy.jsonl",
        [
            {
                "question": "Which planet is closest to the Sun?",
                "subject": "astronomy",
                "choices": ["Mercury", "Venus", "Earth", "Mars"],
                "answer": 0,
            }
        ],
    )
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
        "id,question,A,B,C,D,answer,explanation\n0,TCP 属于哪一层？,应用层,传输层,网络层,链路层,B,\n", encoding="utf-8"
    )
    task = load_task(import_benchmark(tmp_path / "home", "ceval", tmp_path / "ceval"))
    assert "计算机" not in task.text(task.docs[0]) and "computer network" in task.text(task.docs[0])
    assert task.gold_index(task.docs[0], 0) == 1
    cmmlu = tmp_path / "cmmlu" / "test"
    cmmlu.mkdir(parents=True)
    (cmmlu / "agronomy.csv").write_text(
        ",Question,A,B,C,D,Answer\n0,水稻属于哪一科？,禾本科,豆科,茄科,十字花科,A\n", encoding="utf-8"
    )
    task = load_task(import_benchmark(tmp_path / "home", "cmmlu", tmp_path / "cmmlu"))
    assert task.text(task.docs[0]).endswith("答案：") and task.gold_index(task.docs[0], 0) == 0
    (cmmlu / "agronomy.csv").write_text(",Question,A,B,C,D,Answer\n0,问？,a,b,c,d,E\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"agronomy\.csv line 2: the answer must be one of A, B, C, D"):
        import_benchmark(tmp_path / "home", "cmmlu", tmp_path / "cmmlu")


def test_arc_hellaswag_truthfulqa(tmp_path):
    jsonl(
        tmp_path / "arc" / "ARC-Easy-Test.jsonl",
        [
            {
                "id": "x",
                "question": "Which is a mammal?",
                "choices": {"text": ["shark", "whale", "trout"], "label": ["A", "B", "C"]},
                "answerKey": "B",
            }
        ],
    )
    task = load_task(import_benchmark(tmp_path / "home", "arc", tmp_path / "arc", name="arc_easy"))
    assert task.choices(task.docs[0]) == ["shark", "whale", "trout"] and task.gold_index(task.docs[0], 0) == 1
    jsonl(
        tmp_path / "hs" / "hellaswag_val.jsonl",
        [
            {
                "ind": 4,
                "activity_label": "Removing ice from car",
                "ctx_a": "Then, the man writes over the snow covering the window of a car.",
                "ctx_b": "a woman",
                "endings": ["[header] stands by.", "climbs in.", "walks away.", "sits down."],
                "label": "3",
            }
        ],
    )
    task = load_task(import_benchmark(tmp_path / "home", "hellaswag", tmp_path / "hs"))
    assert (
        task.text(task.docs[0])
        == "Removing ice from car: Then, the man writes over the snow covering the window of a car. A woman"
    )
    # lm-evaluation-harness strips before removing "[header]", so a leading space stays: mirrored exactly
    assert task.choices(task.docs[0])[0] == " stands by." and task.gold_index(task.docs[0], 0) == 3
    jsonl(
        tmp_path / "tqa" / "mc.jsonl",
        [
            {
                "question": "What happens if you crack your knuckles?",
                "mc1_targets": {"choices": ["Nothing in particular", "Arthritis"], "labels": [1, 0]},
            }
        ],
    )
    task = load_task(import_benchmark(tmp_path / "home", "truthfulqa_mc1", tmp_path / "tqa"))
    assert task.gold_index(task.docs[0], 0) == 0


def test_arc_and_truthfulqa_in_their_original_release_formats(tmp_path):
    # AI2's ARC-Easy-Test.jsonl: the question is an object with a stem and labelled choices
    jsonl(
        tmp_path / "arc" / "ARC-Easy" / "ARC-Easy-Test.jsonl",
        [
            {
                "id": "Mercury_7175875",
                "question": {
                    "stem": "An astronomer observes that a planet rotates faster after a meteorite impact. "
                    "Which is the most likely effect of this increase in rotation?",
                    "choices": [
                        {"text": "Planetary density will decrease.", "label": "A"},
                        {"text": "Planetary years will become longer.", "label": "B"},
                        {"text": "Planetary days will become shorter.", "label": "C"},
                        {"text": "Planetary gravity will become stronger.", "label": "D"},
                    ],
                },
                "answerKey": "C",
            }
        ],
    )
    task = load_task(import_benchmark(tmp_path / "home", "arc", tmp_path / "arc", name="arc_easy"))
    doc = task.docs[0]
    assert (
        task.text(doc).startswith("Question: An astronomer")
        and task.choices(doc)[2] == "Planetary days will become shorter."
    )
    assert task.gold_index(doc, 0) == 2
    # TruthfulQA's mc_task.json: a JSON array, mc1_targets maps each answer to 1 (true) or 0
    (tmp_path / "tqa").mkdir()
    (tmp_path / "tqa" / "mc_task.json").write_text(
        json.dumps(
            [
                {
                    "question": "What is the smallest country in the world that is at least one square mile in area?",
                    "mc1_targets": {
                        "Nauru is the smallest country in the world that is at least one square mile in area.": 1,
                        (
                            "The smallest country in the world that is at least one square mile in area "
                            "is Vatican City."
                        ): 0,
                        "The smallest country in the world that is at least one square mile in area is Monaco.": 0,
                    },
                    "mc2_targets": {"Nauru": 1, "Vatican City": 0},
                }
            ]
        ),
        encoding="utf-8",
    )
    task = load_task(import_benchmark(tmp_path / "home", "truthfulqa_mc1", tmp_path / "tqa"))
    assert len(task.choices(task.docs[0])) == 3 and task.gold_index(task.docs[0], 0) == 0


def test_mmlu_refuses_an_answer_that_is_not_one_letter(tmp_path):
    folder = tmp_path / "mmlu" / "test"
    folder.mkdir(parents=True)
    with (folder / "anatomy_test.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["Q1?", "a", "b", "c", "d", "A"], ["Q2?", "a", "b", "c", "d", "AB"]])
    with pytest.raises(UserError, match=r"anatomy_test\.csv line 2: expected question,A,B,C,D,answer"):
        import_benchmark(tmp_path / "home", "mmlu", tmp_path / "mmlu")


@pytest.mark.parametrize(
    "response, target, right",
    [
        ("Tom has 2 + 3 = 5 apples.\n#### 5", "5", True),
        ("The answer is 18.", "18", True),
        ("She pays $1,000 in total, so the answer is $1,000.", "1000", True),
        ("First 12 eggs, then 3 more: 15", "15", True),
        ("He had 7 and gave 2, 5 left, then bought 4", "5", False),  # the last number counts, as in lm-eval
        ("I do not know.", "3", False),
    ],
)
def test_gsm8k_scoring_matches_lm_eval_flexible_extract(tmp_path, response, target, right):
    jsonl(tmp_path / "gsm8k" / "test.jsonl", [{"question": "Q?", "answer": f"work\n#### {target}"}])
    task = load_task(import_benchmark(tmp_path / "home", "gsm8k", tmp_path / "gsm8k"))
    assert task.version == "gsm8k-2"
    assert (task.normalize(task.extract(response)) == task.normalize(task.target(task.docs[0]))) is right


def test_gsm8k_and_wikitext(tmp_path, engine):
    jsonl(
        tmp_path / "gsm8k" / "test.jsonl",
        [
            {
                "question": "Tom has 2 apples and buys 3 more. How many apples?",
                "answer": "Tom has 2 + 3 = <<2+3=5>>5 apples.\n#### 5",
            }
        ],
    )
    task = load_task(import_benchmark(tmp_path / "home", "gsm8k", tmp_path / "gsm8k"))
    assert task.target(task.docs[0]) == "5" and task.output_type == "generate_until"
    outcome = evaluate(engine, task, RequestCache(None, "gsm"))
    assert len(outcome.items) == 1 and "extracted" in outcome.items[0]["scores"]
    (tmp_path / "wiki").mkdir()
    (tmp_path / "wiki" / "wiki.test.raw").write_text(
        " = Valkyria Chronicles III = \n\n Senjō no Valkyria 3 is a tactical role playing game .\n\n"
        " = Tower Building of the Little Rock Arsenal = \n\n The building is a historic site .\n",
        encoding="utf-8",
    )
    task = load_task(import_benchmark(tmp_path / "home", "wikitext", tmp_path / "wiki"))
    assert len(task.docs) == 2 and task.docs[1]["text"].startswith("= Tower Building")
    outcome = evaluate(engine, task, RequestCache(None, "wiki"))
    assert outcome.metrics["word_perplexity"] > 1 and outcome.metrics["bits_per_byte"] > 0


def test_unknown_benchmark_or_empty_folder(tmp_path):
    with pytest.raises(UserError, match="Unknown benchmark"):
        import_benchmark(tmp_path, "superglue", tmp_path)
    with pytest.raises(UserError, match=r"No \*_test\.csv or \*\.jsonl or \*\.parquet files"):
        import_benchmark(tmp_path, "mmlu", tmp_path)


def parquet(rows: list[dict]) -> bytes:
    """A Parquet file as the Hub's datasets publish them (columns typed from the rows)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    from tests.hubserver import HubServer

    server = HubServer(tmp_path / "hub")
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("MODELSCOPE_DOMAIN", server.url)
    yield server
    server.close()


def test_benchmarks_download_from_the_hub_and_modelscope(hub, tmp_path, cli_env, internlocal_bin, engine):
    import io
    import subprocess
    import zipfile

    from internlocal.evals.benchmarks import fetch_benchmark

    mmlu_rows = [
        {
            "question": "What is the capital of France?",
            "subject": "geography",
            "choices": ["Berlin", "Paris", "Rome", "Madrid"],
            "answer": 1,
        },
        {
            "question": "What is 2 + 2?",
            "subject": "elementary_mathematics",
            "choices": ["3", "4", "5", "6"],
            "answer": 1,
        },
    ]
    hub.add_dataset_file("cais/mmlu", "all/test-00000-of-00001.parquet", parquet(mmlu_rows))
    hub.add_dataset_file("cais/mmlu", "all/dev-00000-of-00001.parquet", parquet(mmlu_rows[:1]))  # not the scored split
    hub.add_dataset_file("cais/mmlu", "README.md", b"# MMLU\n")
    # the real console script, default source (HF_ENDPOINT points at the loopback hub)
    env = dict(cli_env, HF_ENDPOINT=hub.url)
    out = subprocess.run(
        [internlocal_bin, "eval", "import", "mmlu"], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "task mmlu: 2 items" in out.stdout and "hf:cais/mmlu:all/test-*.parquet@" in out.stderr
    task = load_task(Path(cli_env["INTERNLOCAL_HOME"]) / "tasks" / "mmlu.yaml")
    assert "about geography." in task.text(task.docs[0]) and task.gold_index(task.docs[0], 0) == 1
    assert "from hf:cais/mmlu" in task.description
    outcome = evaluate(engine, task, RequestCache(None, "mmlu-hub"))
    assert len(outcome.items) == 2

    home = tmp_path / "home"
    # C-Eval as the Hub has it: <subject>/{dev,val,test}-*.parquet; the val split is the scored one
    row = {
        "id": 0,
        "question": "TCP 属于哪一层？",
        "A": "应用层",
        "B": "传输层",
        "C": "网络层",
        "D": "链路层",
        "answer": "B",
        "explanation": "",
    }
    hub.add_dataset_file("ceval/ceval-exam", "computer_network/val-00000-of-00001.parquet", parquet([row]))
    hub.add_dataset_file(
        "ceval/ceval-exam", "computer_network/test-00000-of-00001.parquet", parquet([{**row, "answer": ""}])
    )
    folder, source = fetch_benchmark(home, tmp_path / "store", "ceval")
    task = load_task(import_benchmark(home, "ceval", folder, source=source))
    assert (
        len(task.docs) == 1 and "computer network" in task.text(task.docs[0]) and task.gold_index(task.docs[0], 0) == 1
    )

    # CMMLU is published as a zip of CSV folders; ARC with a struct column
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("test/agronomy.csv", ",Question,A,B,C,D,Answer\n0,水稻属于哪一科？,禾本科,豆科,茄科,十字花科,A\n")
        zf.writestr("dev/agronomy.csv", ",Question,A,B,C,D,Answer\n0,问？,a,b,c,d,B\n")
    hub.add_dataset_file("haonan-li/cmmlu", "cmmlu_v1_0_1.zip", archive.getvalue())
    folder, source = fetch_benchmark(home, tmp_path / "store", "cmmlu")
    task = load_task(import_benchmark(home, "cmmlu", folder, source=source))
    assert len(task.docs) == 1 and task.gold_index(task.docs[0], 0) == 0
    hub.add_dataset_file(
        "allenai/ai2_arc",
        "ARC-Challenge/test-00000-of-00001.parquet",
        parquet(
            [
                {
                    "id": "x",
                    "question": "Which is a mammal?",
                    "choices": {"text": ["shark", "whale"], "label": ["A", "B"]},
                    "answerKey": "B",
                }
            ]
        ),
    )
    folder, source = fetch_benchmark(home, tmp_path / "store", "arc")
    task = load_task(import_benchmark(home, "arc", folder, source=source))
    assert task.choices(task.docs[0]) == ["shark", "whale"] and task.gold_index(task.docs[0], 0) == 1

    # ModelScope's dataset tree API (one folder per call), chosen with --from
    hub.add_dataset_file(
        "modelscope/gsm8k",
        "main/test-00000-of-00001.parquet",
        parquet([{"question": "Tom has 2 apples and buys 3 more. How many apples?", "answer": "2 + 3 = 5\n#### 5"}]),
    )
    folder, source = fetch_benchmark(
        home, tmp_path / "store", "gsm8k", "modelscope:modelscope/gsm8k:main/test-*.parquet"
    )
    assert source == "modelscope:modelscope/gsm8k:main/test-*.parquet@master"
    task = load_task(import_benchmark(home, "gsm8k", folder, source=source))
    assert task.target(task.docs[0]) == "5"

    # faults: a repository that is not there, a glob that matches nothing, a damaged Parquet file
    with pytest.raises(UserError, match="was not found"):
        fetch_benchmark(home, tmp_path / "store", "arc", "hf:nobody/nothing")
    with pytest.raises(
        UserError, match="No file in allenai/ai2_arc matches 'ARC-Easy/\\*'; it has: ARC-Challenge/test"
    ):
        fetch_benchmark(home, tmp_path / "store", "arc", "hf:allenai/ai2_arc:ARC-Easy/*")
    hub.add_dataset_file("broken/arc", "test.parquet", b"PAR1 not really")
    folder, source = fetch_benchmark(home, tmp_path / "store", "arc", "hf:broken/arc")
    with pytest.raises(UserError, match=r"test\.parquet: not a readable Parquet file"):
        import_benchmark(home, "arc", folder)
