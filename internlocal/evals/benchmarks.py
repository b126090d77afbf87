"""Standard benchmarks from their published formats, in a local folder, turned into tasks.

Each loader reads the files as their authors publish them (downloaded from the Hugging Face Hub
or ModelScope by ``fetch_benchmark``, or a copy made offline) and writes one JSONL plus a task
YAML under ``<home>/tasks/``, with the prompt conventions lm-evaluation-harness uses for that
benchmark. JSONL and the Hub's Parquet files carry the same columns (MMLU's from cais/mmlu: question,
subject, choices, answer); zip archives are unpacked.

| benchmark | files read | task type |
|---|---|---|
| mmlu | `*_test.csv` (hendrycks: question,A,B,C,D,answer, no header) or JSONL/Parquet | multiple_choice |
| ceval | val split `*_val.csv` or `<subject>/val-*.parquet` (id,question,A-D,answer[,explanation]) | multiple_choice |
| cmmlu | `test/*.csv` (,Question,A,B,C,D,Answer), e.g. from cmmlu_v1_0_1.zip | multiple_choice |
| arc | JSONL/Parquet (id, question, choices {text, label}, answerKey) | multiple_choice |
| hellaswag | JSONL/Parquet (activity_label, ctx_a, ctx_b, endings, label) | multiple_choice |
| truthfulqa_mc1 | JSONL/Parquet (question, mc1_targets {choices, labels}) | multiple_choice |
| gsm8k | JSONL/Parquet (question, answer ending in "#### N") | generate_until |
| wikitext | JSONL/Parquet/text (lines of an article; "= Heading =" lines start documents) | perplexity |
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from internlocal.data.formats import read_rows
from internlocal.errors import UserError
from internlocal.i18n import _

LETTERS = "ABCDEFGHIJ"


def _files(folder: Path, *groups: tuple[str, ...]) -> list[Path]:
    """Files matching the first group of patterns that matches any (a benchmark's preferred split first)."""
    for patterns in groups:
        found = sorted({p for pattern in patterns for p in Path(folder).rglob(pattern)})
        if found:
            return found
    wanted = " or ".join(p for patterns in groups for p in patterns)
    raise UserError(
        _("No {wanted} files under {folder}; point at the benchmark's data folder.").format(
            wanted=wanted, folder=folder
        )
    )


def _csv(path: Path, header: bool) -> Iterator[tuple[str, Any]]:
    """(line label, row): rows as lists, or as dicts by the header line when ``header``."""
    with path.open(encoding="utf-8", newline="") as fh:
        reader: Any = csv.DictReader(fh) if header else csv.reader(fh)
        for n, row in enumerate(reader, start=2 if header else 1):
            yield f"line {n}", row


def _rows(path: Path, header: bool = True) -> Iterator[tuple[str, Any]]:
    return _csv(path, header) if path.suffix == ".csv" else read_rows(path)


ROWS = ("*.jsonl", "*.parquet")
# a loader whose prompt or scoring changed gets a new version, so old and new scores never share a row
VERSIONS = {"gsm8k": 2}  # 2: lm-eval's flexible-extract (last number; commas, $ and a final stop ignored)


def _subject(path: Path, suffixes: tuple[str, ...] = ("_test", "_val", "_dev")) -> str:
    if path.suffix == ".parquet":  # the Hub's layout: <subject>/<split>-00000-of-00001.parquet
        return path.parent.name.replace("_", " ")
    stem = path.stem
    for suffix in suffixes:
        stem = stem.removesuffix(suffix)
    return stem.replace("_", " ")


def mmlu(folder: Path) -> tuple[list[dict], dict]:
    rows: list[dict[str, Any]] = []
    for path in _files(folder, ("*_test.csv", *ROWS)):
        if path.suffix == ".csv":
            for n, row in _csv(path, header=False):
                if len(row) != 6 or row[5].strip() not in ("A", "B", "C", "D"):
                    raise UserError(_("{path} {n}: expected question,A,B,C,D,answer (A-D).").format(path=path, n=n))
                rows.append(
                    {
                        "subject": _subject(path),
                        "question": row[0],
                        "choices": row[1:5],
                        "answer": "ABCD".index(row[5].strip()),
                    }
                )
        else:
            for n, row in read_rows(path):
                if not isinstance(row.get("choices"), list) or not isinstance(row.get("answer"), int):
                    raise UserError(
                        _("{path} {n}: expected question, subject, choices (list) and answer (index).").format(
                            path=path, n=n
                        )
                    )
                rows.append(
                    {
                        "subject": str(row.get("subject", "")).replace("_", " "),
                        "question": row["question"],
                        "choices": row["choices"],
                        "answer": row["answer"],
                    }
                )
    spec = {
        "output_type": "multiple_choice",
        "doc_to_choice": ["A", "B", "C", "D"],
        "doc_to_target": "{answer}",
        "doc_to_text": "The following are multiple choice questions (with answers) about {subject}.\n\n{question}\n"
        "A. {c0}\nB. {c1}\nC. {c2}\nD. {c3}\nAnswer:",
    }
    return [{**r, **{f"c{i}": c for i, c in enumerate(r["choices"])}} for r in rows], spec


def _chinese_mcq(
    folder: Path, groups: Sequence[tuple[str, ...]], q: str, answer: str, intro: str
) -> tuple[list[dict], dict]:
    rows = []
    for path in _files(folder, *groups):
        for n, row in _rows(path):
            if answer not in row or row[answer] not in ("A", "B", "C", "D"):
                raise UserError(_("{path} {n}: the answer must be one of A, B, C, D.").format(path=path, n=n))
            rows.append(
                {
                    "subject": _subject(path),
                    "question": row[q],
                    "c0": row["A"],
                    "c1": row["B"],
                    "c2": row["C"],
                    "c3": row["D"],
                    "answer": "ABCD".index(row[answer]),
                }
            )
    spec = {
        "output_type": "multiple_choice",
        "doc_to_choice": ["A", "B", "C", "D"],
        "doc_to_target": "{answer}",
        "target_delimiter": " ",
        "doc_to_text": intro + "{question}\nA. {c0}\nB. {c1}\nC. {c2}\nD. {c3}\n答案：",
    }
    return rows, spec


def ceval(folder: Path) -> tuple[list[dict], dict]:
    # the val split: test answers are not published, dev is the 5 few-shot examples per subject
    groups = [("*_val.csv", "val-*.parquet"), ("*_test.csv", "test-*.parquet"), ("*_dev.csv", "dev-*.parquet")]
    return _chinese_mcq(
        folder, groups, "question", "answer", "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n"
    )


def cmmlu(folder: Path) -> tuple[list[dict], dict]:
    groups = [("test/*.csv", "test-*.parquet"), ("*.csv",)]  # the test split (dev is for few-shot)
    return _chinese_mcq(
        folder, groups, "Question", "Answer", "以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n"
    )


def arc(folder: Path) -> tuple[list[dict], dict]:
    rows = []
    for path in _files(folder, ROWS):
        for n, row in read_rows(path):
            if isinstance(row.get("question"), dict):  # AI2's own JSONL: question.stem, question.choices[{text, label}]
                stem = row["question"]
                row = {
                    "question": stem.get("stem", ""),
                    "answerKey": row.get("answerKey"),
                    "choices": {
                        "label": [c.get("label") for c in stem.get("choices", [])],
                        "text": [c.get("text") for c in stem.get("choices", [])],
                    },
                }
            choices = row.get("choices") or {}
            labels, texts = choices.get("label", []), choices.get("text", [])
            if row.get("answerKey") not in labels:
                raise UserError(
                    _("{path} {n}: answerKey {answer_key!r} is not one of the labels {labels}.").format(
                        path=path, n=n, answer_key=row.get("answerKey"), labels=labels
                    )
                )
            rows.append({"question": row["question"], "choices": texts, "answer": labels.index(row["answerKey"])})
    return rows, {
        "output_type": "multiple_choice",
        "doc_to_text": "Question: {question}\nAnswer:",
        "doc_to_choice": "{choices}",
        "doc_to_target": "{answer}",
    }


def _hellaswag_clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag(folder: Path) -> tuple[list[dict], dict]:
    rows = []
    for path in _files(folder, ROWS):
        for n, row in read_rows(path):
            try:
                ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
                label = int(row["label"])
            except (KeyError, ValueError):
                raise UserError(
                    _("{path} {n}: expected ctx_a, ctx_b, endings and a numeric label.").format(path=path, n=n)
                ) from None
            rows.append(
                {
                    "query": _hellaswag_clean(row["activity_label"] + ": " + ctx),
                    "choices": [_hellaswag_clean(e) for e in row["endings"]],
                    "answer": label,
                }
            )
    return rows, {
        "output_type": "multiple_choice",
        "doc_to_text": "{query}",
        "doc_to_choice": "{choices}",
        "doc_to_target": "{answer}",
    }


def truthfulqa_mc1(folder: Path) -> tuple[list[dict], dict]:
    rows = []
    for path in _files(folder, ROWS, ("mc_task.json",)):
        for n, row in read_rows(path):
            targets = row.get("mc1_targets") or {}
            if "choices" not in targets:  # the original mc_task.json: {answer text: 1 or 0, ...}
                targets = {"choices": list(targets), "labels": list(targets.values())}
            labels = targets.get("labels", [])
            if labels.count(1) != 1:
                raise UserError(
                    _("{path} {n}: mc1_targets must have exactly one correct label.").format(path=path, n=n)
                )
            rows.append({"question": row["question"], "choices": targets["choices"], "answer": labels.index(1)})
    return rows, {
        "output_type": "multiple_choice",
        "doc_to_text": "Q: {question}\nA:",
        "doc_to_choice": "{choices}",
        "doc_to_target": "{answer}",
    }


def gsm8k(folder: Path) -> tuple[list[dict], dict]:
    rows = []
    for path in _files(folder, ROWS):
        for n, row in read_rows(path):
            match = re.search(r"####\s*(-?[\d,\.]+)", row.get("answer", ""))
            if not match:
                raise UserError(_("{path} {n}: the answer has no final '#### N' line.").format(path=path, n=n))
            rows.append({"question": row["question"], "target": match.group(1).replace(",", "")})
    # lm-evaluation-harness's "flexible-extract": the last number in the answer, compared without commas,
    # dollar signs or a final full stop, ignoring case
    return rows, {
        "output_type": "generate_until",
        "doc_to_text": "Question: {question}\nAnswer:",
        "doc_to_target": "{target}",
        "until": ["Question:", "</s>", "<|im_end|>"],
        "max_tokens": 256,
        "filter": {"regex": r"(-?[$0-9.,]{2,})|(-?[0-9]+)", "group": 0, "select": -1},
        "ignore": [",", r"\$", r"(?s).*#### ", r"\.$"],
        "ignore_case": True,
    }


def wikitext(folder: Path) -> tuple[list[dict], dict]:
    lines: list[str] = []
    for path in _files(folder, (*ROWS, "*.txt", "*.raw")):
        if path.suffix in (".jsonl", ".parquet"):
            lines += [row.get("text", "") for __, row in read_rows(path)]
        else:
            lines += path.read_text(encoding="utf-8").splitlines(keepends=True)
    documents: list[str] = []
    current: list[str] = []
    for line in lines:
        if re.match(r"^ = [^=].* = \n?$", line) and current:  # a top-level heading starts the next article
            documents.append("".join(current).strip())
            current = []
        current.append(line)
    if current and "".join(current).strip():
        documents.append("".join(current).strip())
    return [{"text": d} for d in documents if d], {"output_type": "perplexity", "doc_to_text": "{text}"}


# where each benchmark is published on the Hugging Face Hub, and which of its files are the split scored
HUB_SOURCES = {
    "mmlu": "hf:cais/mmlu:all/test-*.parquet",
    "ceval": "hf:ceval/ceval-exam:*/val-*.parquet",
    "cmmlu": "hf:haonan-li/cmmlu:cmmlu_v1_0_1.zip",
    "arc": "hf:allenai/ai2_arc:ARC-Challenge/test-*.parquet",
    "hellaswag": "hf:Rowan/hellaswag:*validation*.parquet",
    "truthfulqa_mc1": "hf:truthfulqa/truthful_qa:multiple_choice/validation-*.parquet",
    "gsm8k": "hf:openai/gsm8k:main/test-*.parquet",
    "wikitext": "hf:Salesforce/wikitext:wikitext-2-raw-v1/test-*.parquet",
}


def fetch_benchmark(
    home: Path,
    store_dir: Path,
    benchmark: str,
    spec: str | None = None,
    on_bytes=lambda n: None,
    check_cancelled=lambda: None,
) -> tuple[Path, str]:
    """Download a benchmark's published files into ``<home>/benchmarks/<benchmark>/``; returns (folder, source).

    ``spec`` is ``hf:org/name[:glob][@rev]`` or ``modelscope:org/name[:glob][@rev]``; by default the
    Hub repository in ``HUB_SOURCES``.
    """
    from internlocal.hub.fetch import fetch_dataset

    if benchmark not in LOADERS:
        raise UserError(
            _("Unknown benchmark {benchmark!r}; choose one of {choices}.").format(
                benchmark=benchmark, choices=", ".join(LOADERS)
            )
        )
    folder = Path(home) / "benchmarks" / benchmark
    source, __ = fetch_dataset(
        store_dir, folder, spec or HUB_SOURCES[benchmark], on_bytes=on_bytes, check_cancelled=check_cancelled
    )
    return folder, source


LOADERS = {
    "mmlu": mmlu,
    "ceval": ceval,
    "cmmlu": cmmlu,
    "arc": arc,
    "hellaswag": hellaswag,
    "truthfulqa_mc1": truthfulqa_mc1,
    "gsm8k": gsm8k,
    "wikitext": wikitext,
}


def import_benchmark(
    home: Path, benchmark: str, folder: Path, name: str | None = None, source: str | None = None
) -> Path:
    """Convert a benchmark's published files into a task; returns the task YAML path."""
    if benchmark not in LOADERS:
        raise UserError(
            _("Unknown benchmark {benchmark!r}; choose one of {choices}.").format(
                benchmark=benchmark, choices=", ".join(LOADERS)
            )
        )
    rows, spec = LOADERS[benchmark](Path(folder))
    if not rows:
        raise UserError(_("{folder} holds no {benchmark} items.").format(folder=folder, benchmark=benchmark))
    name = name or benchmark
    out = Path(home) / "tasks"
    out.mkdir(parents=True, exist_ok=True)
    data = out / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    task = {
        "name": name,
        "version": f"{benchmark}-{VERSIONS.get(benchmark, 1)}",
        "group": "benchmarks",
        "description": f"{benchmark} ({len(rows)} items{', from ' + source if source else ''})",
        "dataset": data.name,
        **spec,
    }
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(task, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path
