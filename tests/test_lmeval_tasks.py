"""lm-eval task files as they are (include, groups, include paths, !function, splits, file types, output types),
CircularEval, and per-subject/category scores. Agreement with lm-eval itself is in test_eval_agreement.py."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from internlocal.errors import UserError
from internlocal.evals.benchmarks import import_benchmark
from internlocal.evals.lmeval import load_lmeval, to_lmeval_yaml
from internlocal.evals.runner import RequestCache, evaluate
from internlocal.evals.tasks import BUILTIN_DIR, get_task, get_tasks, load_task

CAPITALS = [json.loads(line) for line in (BUILTIN_DIR / "capitals_en.jsonl").read_text(encoding="utf-8").splitlines()]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def capitals_folder(folder: Path, n: int = 8) -> Path:
    """Capitals with the options in fields A-D (the answer an index), and an lm-eval base template."""
    rows = [
        {"question": r["question"], **dict(zip("ABCD", r["choices"], strict=True)), "answer": r["answer"]}
        for r in CAPITALS[:n]
    ]
    write(folder / "data" / "capitals.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    write(
        folder / "_base.yaml",
        """dataset_path: json
dataset_kwargs:
  data_files:
    test: data/capitals.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{question}}\\nA. {{A}}\\nB. {{B}}\\nC. {{C}}\\nD. {{D}}\\nAnswer:"
doc_to_target: answer
metric_list:
  - metric: acc
""",
    )
    write(
        folder / "capitals_letters.yaml",
        'include: _base.yaml\ntask: capitals_letters\ndoc_to_choice: ["A", "B", "C", "D"]\n',
    )
    write(
        folder / "capitals_cloze.yaml", 'include: _base.yaml\ntask: capitals_cloze\ndoc_to_choice: "{{[A, B, C, D]}}"\n'
    )
    write(folder / "capitals_group.yaml", "group: capitals_both\ntask:\n  - capitals_letters\n  - capitals_cloze\n")
    return folder


def test_include_group_and_include_path(tmp_path):
    folder = capitals_folder(tmp_path / "tasks")
    letters = get_task(str(folder / "capitals_letters.yaml"))
    assert letters.output_type == "multiple_choice" and letters.metric_names == {"acc"}
    doc = letters.docs[0]
    assert (
        letters.context(0, doc)
        == "Question: What is the capital of France?\nA. London\nB. New Delhi\nC. Paris\nD. Canberra\nAnswer:"
    )
    assert letters.choices(doc) == ["A", "B", "C", "D"] and letters.gold_index(doc, 0) == 2
    cloze = get_task(str(folder / "capitals_cloze.yaml"))
    assert cloze.choices(doc) == ["London", "New Delhi", "Paris", "Canberra"] and cloze.target(doc) == "Paris"

    grouped = get_tasks(str(folder / "capitals_group.yaml"))
    assert [(t.name, t.group) for t in grouped] == [
        ("capitals_letters", "capitals_both"),
        ("capitals_cloze", "capitals_both"),
    ]
    by_name = get_tasks("capitals_both", include_paths=[folder])
    assert [t.name for t in by_name] == ["capitals_letters", "capitals_cloze"]
    assert get_tasks("capitals_cloze", include_paths=[folder])[0].prompt_hash() == cloze.prompt_hash()
    with pytest.raises(UserError, match="No lm-eval task, group or tag 'nope'"):
        get_tasks("nope", include_paths=[folder])


def test_function_code_runs_only_from_a_trusted_folder(tmp_path):
    folder = capitals_folder(tmp_path / "tasks")
    write(
        folder / "utils.py",
        "def process_docs(dataset):\n"
        "    return dataset.map(lambda d: {**d, 'question': d['question'].upper()})\n\n"
        "def doc_to_text(doc):\n"
        "    return 'Q: ' + doc['question'] + '\\nAnswer:'\n",
    )
    path = write(
        folder / "capitals_code.yaml",
        "include: _base.yaml\ntask: capitals_code\nprocess_docs: !function utils.process_docs\n"
        "doc_to_text: !function utils.doc_to_text\ndoc_to_choice: '{{[A, B, C, D]}}'\n",
    )
    with pytest.raises(UserError, match=r"runs Python code \(!function utils\.") as refused:
        get_tasks(str(path))
    assert "--trust-code" in str(refused.value) and str(folder.resolve()) in str(refused.value)
    task = get_tasks(str(path), trusted=[folder])[0]
    assert task.context(0, task.docs[0]) == "Q: WHAT IS THE CAPITAL OF FRANCE?\nAnswer:"


@pytest.mark.parametrize(
    ("extra", "refusal"),
    [
        ("process_results: !function utils.process_results\n", "process_results is not supported"),
        ("output_type: multiple_choice_with_magic\n", "output_type 'multiple_choice_with_magic' is not supported"),
        ("metric_list:\n  - metric: f1\n", "metric 'f1' is not supported"),
        ("filter_list:\n  - name: x\n    filter:\n      - function: multi_choice_regex\n", "multi_choice_regex"),
        ("use_prompt: promptsource:x\n", "use_prompt is not supported"),
        ("dataset_path: cais/mmlu\n", r"dataset_kwargs are not supported for a Hub dataset \(cais/mmlu\)"),
        ("dataset_path: text\n", "dataset_path 'text' is not supported"),
        ("repeats: 4\n", "repeats"),
    ],
)
def test_what_is_not_supported_is_refused_by_name(tmp_path, extra, refusal):
    folder = capitals_folder(tmp_path / "tasks")
    path = write(folder / "bad.yaml", f"include: _base.yaml\ntask: bad\ndoc_to_choice: ['A', 'B', 'C', 'D']\n{extra}")
    with pytest.raises(UserError, match=refusal):
        get_tasks(str(path))


def test_splits_and_file_types(tmp_path):
    import pandas as pd

    rows = [{"question": r["question"], "target": r["choices"][r["answer"]]} for r in CAPITALS[:6]]
    pd.DataFrame(rows[:3]).to_parquet(tmp_path / "train.parquet")
    pd.DataFrame(rows[3:]).to_csv(tmp_path / "test.csv", index=False)
    path = write(
        tmp_path / "qa.yaml",
        f"""task: qa
dataset_path: parquet
dataset_kwargs:
  data_files:
    train: {tmp_path / "train.parquet"}
    test: {tmp_path / "test.csv"}
test_split: test
fewshot_split: train
fewshot_config:
  sampler: first_n
num_fewshot: 2
output_type: loglikelihood
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_target: target
""",
    )
    with pytest.raises(UserError, match=r"test\.csv is not a parquet file"):
        _ = get_task(str(path)).docs
    path.write_text(path.read_text().replace("test.csv", "test.parquet"))
    pd.DataFrame(rows[3:]).to_parquet(tmp_path / "test.parquet")
    task = get_task(str(path))
    assert [d["question"] for d in task.docs] == [r["question"] for r in rows[3:]]
    expected_shots = "".join(f"Q: {r['question']}\nA: {r['target']}\n\n" for r in rows[:2])  # first_n from train
    assert task.context(0, task.docs[0]) == expected_shots + f"Q: {rows[3]['question']}\nA:"


def test_loglikelihood_and_rolling_output_types(engine, tmp_path):
    rows = [{"question": r["question"], "target": r["choices"][r["answer"]]} for r in CAPITALS[:5]]
    write(tmp_path / "d.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files: {tmp_path / 'd.jsonl'}\ntest_split: train\n"
    ll = get_task(
        str(
            write(
                tmp_path / "ll.yaml",
                common + "task: ll\noutput_type: loglikelihood\n"
                "doc_to_text: 'Q: {{question}}\\nA:'\ndoc_to_target: target\n",
            )
        )
    )
    out = evaluate(engine, ll, RequestCache(None, "ll"))
    lls = [it["scores"]["loglikelihood"] for it in out.items]
    assert out.metrics["perplexity"] == pytest.approx(math.exp(-sum(lls) / len(lls)))
    assert out.metrics["acc"] == sum(it["scores"]["acc"] for it in out.items) / len(rows)
    # the target is asked as written (lm-eval adds no delimiter to a loglikelihood request)
    assert out.items[0]["target"] == rows[0]["target"]
    direct = engine.loglikelihood([(ll.context(0, ll.docs[0]), rows[0]["target"])])[0]
    assert lls[0] == pytest.approx(direct.logprob, abs=1e-4)

    rolling = get_task(
        str(
            write(
                tmp_path / "r.yaml",
                common + "task: r\noutput_type: loglikelihood_rolling\n"
                "doc_to_text: ''\ndoc_to_target: question\nmetric_list:\n  - metric: word_perplexity\n",
            )
        )
    )
    out = evaluate(engine, rolling, RequestCache(None, "r"))
    assert set(out.metrics) == {"word_perplexity"} and out.metrics["word_perplexity"] > 1


def test_our_task_written_as_lm_eval_yaml_asks_the_same(tmp_path):
    for name in ("capitals_en", "capitals_en_qa", "sample_text"):
        ours = get_task(name)
        data = tmp_path / name / f"{name}.jsonl"
        data.parent.mkdir()
        data.write_bytes(ours.dataset_path.read_bytes())
        exported = load_lmeval(write(tmp_path / name / f"{name}.yaml", to_lmeval_yaml(ours, data)))[0]
        for i in range(3):
            if ours.output_type == "perplexity":  # lm-eval scores doc_to_target: the exported file puts it there
                assert exported.rolling_text(exported.docs[i]) == ours.rolling_text(ours.docs[i])
            else:
                assert exported.context(i, exported.docs[i]) == ours.context(i, ours.docs[i])
        if ours.output_type == "multiple_choice":
            assert exported.choices(exported.docs[0]) == ours.choices(ours.docs[0])
            assert exported.gold_index(exported.docs[0], 0) == ours.gold_index(ours.docs[0], 0)
        if ours.output_type == "generate_until":
            assert exported.until == ours.until and exported.max_tokens == ours.max_tokens


def test_circular_eval_exposes_a_letter_biased_model(engine, tmp_path):
    """Every right answer is "A": a model that prefers the letter A scores well plainly, and CircularEval (the
    options rotated so the right one sits at each letter in turn) shows how much of that was the letter."""
    rows = []
    for r in CAPITALS[:12]:
        right = r["choices"][r["answer"]]
        wrong = [c for c in r["choices"] if c != right]
        rows.append({"question": r["question"], "A": right, "B": wrong[0], "C": wrong[1], "D": wrong[2], "answer": "A"})
    path = tmp_path / "biased.csv"
    import csv

    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["question", "A", "B", "C", "D", "answer"])
        writer.writeheader()
        writer.writerows(rows)
    from internlocal.evals.tasks import add_custom_task

    task = load_task(add_custom_task(tmp_path, "biased", path, "mcq"))
    rotated = task.rotated(task.docs[0], 1)
    assert [rotated[k] for k in "ABCD"] == [rows[0][k] for k in "BCDA"]

    out = evaluate(engine, task, RequestCache(None, "circ"), circular=True)
    letters = [it["scores"]["rotations"] for it in out.items]
    picked_a = sum(r[0] == "A" for r in letters) / len(letters)
    assert out.metrics["circular_acc"] < out.metrics["acc"]
    assert (
        out.metrics["circular_acc"]
        == sum(all(it["scores"]["rotations"][k] == "ABCD"[(0 - k) % 4] for k in range(4)) for it in out.items) / 12
    )
    assert picked_a == out.metrics["acc"]  # the right answer is always A in the plain order
    plain = evaluate(engine, task, RequestCache(None, "plain"))
    assert plain.metrics["acc"] == out.metrics["acc"] and "circular_acc" not in plain.metrics

    with pytest.raises(
        UserError, match="CircularEval rotates lettered options; task capitals_en scores the option texts"
    ):
        evaluate(engine, get_task("capitals_en"), RequestCache(None, "x"), circular=True)


MMLU_ROWS = {
    "abstract_algebra": [("Find the order of the group Z_4.", "1", "2", "4", "8", "C")],
    "philosophy": [("Who wrote the Republic?", "Plato", "Kant", "Hume", "Locke", "A")],
    "high_school_geography": [("What is the capital of France?", "Rome", "Paris", "Bonn", "Oslo", "B")],
    "college_physics": [("What is the unit of force?", "joule", "watt", "newton", "volt", "C")],
}


def test_mmlu_from_its_published_files_scores_per_subject_and_category(
    services, internlocal_bin, cli_env, home, tmp_path
):
    import csv

    folder = tmp_path / "data" / "test"
    folder.mkdir(parents=True)
    for subject, rows in MMLU_ROWS.items():
        with (folder / f"{subject}_test.csv").open("w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(rows)  # hendrycks' layout: no header
    import_benchmark(home, "mmlu", tmp_path / "data")

    def cli(*args: str) -> str:
        out = subprocess.run([internlocal_bin, *args], env=cli_env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout

    cli("eval", "run", "smollm2-135m-instruct-q4_1", "mmlu", "--circular")
    board = json.loads(cli("eval", "results", "--json"))
    rows = {r["metric"]: r for r in board["rows"] if r["task"] == "mmlu"}
    assert set(rows) == {"acc", "circular_acc"}  # plain and circular side by side
    details = {d["label"]: d["values"]["smollm2-135m-instruct-q4_1"] for d in rows["acc"]["details"]}
    assert {k for k in details if k.startswith("subject: ")} == {f"subject: {s.replace('_', ' ')}" for s in MMLU_ROWS}
    assert {k for k in details if k.startswith("category: ")} == {
        "category: STEM",
        "category: Humanities",
        "category: Social Sciences",
    }
    stem = [details["subject: abstract algebra"], details["subject: college physics"]]
    assert details["category: STEM"] == pytest.approx(sum(stem) / 2)
    text = cli("eval", "results", "--subjects")
    assert "  subject: philosophy" in text and "  category: Humanities" in text
    assert "subject:" not in cli("eval", "results")
    csv_rows = list(csv.reader(cli("eval", "results", "--format", "csv").splitlines()))
    assert any(r[0] == "mmlu / category: STEM" for r in csv_rows)


def test_circular_refusals_name_the_reason(services, tmp_path):
    from internlocal.services.evaluation import estimate_eval, start_eval

    # the estimate counts the rotations: four options, four times the time, the same questions
    folder = capitals_folder(tmp_path / "tasks")
    letters = get_task(str(folder / "capitals_letters.yaml"))
    plain = estimate_eval(services, ["smollm2-135m-instruct-q4_1"], [letters])
    rotated = estimate_eval(services, ["smollm2-135m-instruct-q4_1"], [letters], circular=True)
    assert rotated.items == plain.items == 8 and rotated.seconds == pytest.approx(4 * plain.seconds)

    with pytest.raises(UserError, match="scores the option texts themselves"):
        start_eval(services, ["smollm2-135m-instruct-q4_1"], ["capitals_en"], circular=True)
    with pytest.raises(UserError, match="CircularEval is for lettered multiple choice; task capitals_en_qa"):
        start_eval(services, ["smollm2-135m-instruct-q4_1"], ["capitals_en_qa"], circular=True)
    with pytest.raises(UserError, match="is not a folder"):
        start_eval(services, ["smollm2-135m-instruct-q4_1"], ["x"], include_paths=["/nonexistent"])


def test_a_hub_dataset_is_fetched_once_through_the_store(tmp_path, monkeypatch, home):
    """lm-eval's MMLU layout: ``dataset_path: org/name`` + ``dataset_name``, test and dev splits as the Hub's
    Parquet files; first_n few-shot examples from dev, the question's choices through Jinja indexing."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.hubserver import HubServer

    def parquet(rows: list[dict]) -> bytes:
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), buffer)
        return buffer.getvalue()

    def row(question: str, choices: list[str], answer: int) -> dict:
        return {"question": question, "subject": "geography", "choices": choices, "answer": answer}

    server = HubServer(tmp_path / "hub")
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    try:
        test = [row("What is the capital of France?", ["Rome", "Paris", "Bonn", "Oslo"], 1)]
        dev = [row("What is the capital of Italy?", ["Rome", "Paris", "Bonn", "Oslo"], 0)]
        server.add_dataset_file("cais/mmlu-mini", "geography/test-00000-of-00001.parquet", parquet(test))
        server.add_dataset_file("cais/mmlu-mini", "geography/dev-00000-of-00001.parquet", parquet(dev))
        server.add_dataset_file("cais/mmlu-mini", "history/test-00000-of-00001.parquet", parquet(dev))
        path = write(
            tmp_path / "mmlu_geo.yaml",
            """task: mmlu_geo
dataset_path: cais/mmlu-mini
dataset_name: geography
test_split: test
fewshot_split: dev
fewshot_config:
  sampler: first_n
num_fewshot: 1
output_type: multiple_choice
doc_to_text: "{{question.strip()}}\\nA. {{choices[0]}}\\nB. {{choices[1]}}\\nC. {{choices[2]}}\\n\\
  D. {{choices[3]}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
""",
        )
        task = get_task(str(path), home)
        doc = task.docs[0]
        shot = "What is the capital of Italy?\nA. Rome\nB. Paris\nC. Bonn\nD. Oslo\nAnswer: A\n\n"
        assert (
            task.context(0, doc)
            == shot + "What is the capital of France?\nA. Rome\nB. Paris\nC. Bonn\nD. Oslo\nAnswer:"
        )
        assert task.gold_index(doc, 0) == 1 and task.target(doc) == "B"
        assert task.rotated(doc, 1)["choices"] == ["Paris", "Bonn", "Oslo", "Rome"]
        fetched = len(server.requests)
    finally:
        server.close()
    again = get_task(str(path), home)  # the server is gone: the files come from <home>/benchmarks/lm-eval
    assert again.docs == task.docs and fetched > 0


async def test_eval_screen_runs_circular_and_expands_subjects(home, tmp_path):
    """The CircularEval box adds circular_acc beside acc; Enter on the task's name opens its categories and
    subjects, and closes them again."""
    import csv

    from textual.widgets import Checkbox, DataTable, SelectionList

    from internlocal.tui.app import InternLocalApp
    from tests.test_tui import SIZE, greedy_settings, ready, until

    folder = tmp_path / "mmlu"
    folder.mkdir()
    for subject, rows in MMLU_ROWS.items():
        with (folder / f"{subject}_test.csv").open("w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(rows)
    import_benchmark(home, "mmlu", folder)

    app = InternLocalApp(greedy_settings(home))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("f9")
        await until(pilot, lambda: type(app.screen).__name__ == "EvalScreen")
        screen = app.screen
        tasks = screen.query_one("#tasks", SelectionList)
        await until(pilot, lambda: "mmlu" in [tasks.get_option_at_index(i).value for i in range(tasks.option_count)])
        tasks.deselect_all()
        tasks.select("mmlu")
        screen.query_one("#circular", Checkbox).value = True
        await pilot.press("ctrl+r")
        board = screen.query_one("#board", DataTable)
        await until(pilot, lambda: board.row_count == 2, timeout=120)
        rows = [tuple(map(str, board.get_row_at(i)))[:2] for i in range(2)]
        assert rows == [("▸ mmlu", "acc"), ("▸ mmlu", "circular_acc")]
        board.focus()
        board.move_cursor(row=0, column=0)
        await pilot.press("enter")
        await until(pilot, lambda: board.row_count == 2 + 3 + 4)  # three categories, four subjects
        labels = [str(board.get_row_at(i)[0]).strip() for i in range(board.row_count)]
        assert labels[:5] == [
            "▾ mmlu",
            "category: Humanities",
            "category: STEM",
            "category: Social Sciences",
            "subject: abstract algebra",
        ]
        assert labels[-1] == "▸ mmlu"  # the circular row stays closed
        board.move_cursor(row=0, column=0)
        await pilot.press("enter")
        await until(pilot, lambda: board.row_count == 2)


def test_lm_eval_details_that_are_easy_to_get_wrong(tmp_path):
    folder = capitals_folder(tmp_path / "tasks")
    # one stop string is a list of one, not a list of characters
    gen = write(
        folder / "gen.yaml",
        "include: _base.yaml\ntask: gen\noutput_type: generate_until\ndoc_to_target: A\n"
        "generation_kwargs:\n  until: 'Question:'\n  max_gen_toks: 8\nmetric_list:\n  - metric: exact_match\n",
    )
    assert get_task(str(gen)).until == ["Question:"]
    # a CSV target column is text; a digit there is still the choice's index, as lm-eval (pandas) reads it
    write(folder / "yn.csv", "question,label\nIs Paris in France?,1\nIs Rome in Spain?,0\n")
    yn = get_task(
        str(
            write(
                folder / "yn.yaml",
                f"task: yn\ndataset_path: csv\ndataset_kwargs:\n  data_files: {folder / 'yn.csv'}\n"
                "test_split: train\noutput_type: multiple_choice\ndoc_to_text: question\n"
                "doc_to_choice: ['no', 'yes']\ndoc_to_target: label\n",
            )
        )
    )
    assert [yn.gold_index(d, i) for i, d in enumerate(yn.docs)] == [1, 0]
    # a group inside itself, and fewshot_config keys that would change the examples, are refused by name
    write(folder / "loop.yaml", "group: loop\ntask:\n  - capitals_letters\n  - loop\n")
    with pytest.raises(UserError, match=r"Group loop .* contains itself"):
        get_tasks(str(folder / "loop.yaml"))
    samples = write(
        folder / "samples.yaml",
        "include: _base.yaml\ntask: s\ndoc_to_choice: ['A', 'B', 'C', 'D']\nfewshot_config:\n  sampler: first_n\n"
        "  samples: []\n",
    )
    with pytest.raises(UserError, match=r"fewshot_config\.samples is not supported"):
        get_tasks(str(samples))
    # a tag names every task tagged with it
    for name in ("capitals_letters", "capitals_cloze"):
        path = folder / f"{name}.yaml"
        path.write_text(path.read_text() + "tag: capitals_tag\n")
    assert [t.name for t in get_tasks("capitals_tag", include_paths=[folder])] == ["capitals_cloze", "capitals_letters"]


def test_a_function_named_in_an_included_file_lives_beside_that_file(tmp_path):
    """lm-eval's layout for hundreds of tasks: a base template one folder up names `!function utils.x`, and
    utils.py sits beside the template, not beside the task file."""
    folder = capitals_folder(tmp_path / "tasks")
    write(folder / "utils.py", "def doc_to_text(doc):\n    return 'Q: ' + doc['question'] + '\\nA:'\n")
    write(folder / "_coded.yaml", "include: _base.yaml\ndoc_to_text: !function utils.doc_to_text\n")
    path = write(folder / "sub" / "t.yaml", "include: ../_coded.yaml\ntask: t\ndoc_to_choice: ['A', 'B', 'C', 'D']\n")
    with pytest.raises(UserError, match=str(folder.resolve())):
        get_tasks(str(path), trusted=[folder / "sub"])  # trust in the task's folder does not cover the base's
    task = get_tasks(str(path), trusted=[folder])[0]
    assert task.context(0, task.docs[0]) == "Q: What is the capital of France?\nA:"
