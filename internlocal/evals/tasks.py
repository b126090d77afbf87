"""Evaluation tasks: YAML files in lm-evaluation-harness's model, validated by a schema.

    name: capitals_en_mcq
    version: "1"
    output_type: multiple_choice        # multiple_choice | generate_until | perplexity
    dataset: capitals_en.jsonl          # JSONL or CSV, relative to the YAML file
    doc_to_text: "Question: {question}\\nAnswer:"
    doc_to_choice: "{choices}"          # a field holding a list, or a list of templates
    doc_to_target: "{answer}"           # index or text of the right choice / expected answer
    num_fewshot: 0
    filter: {regex: "...", group: 1, select: -1}  # generate_until: extraction (select: which match) before exact match
    ignore: [",", "\\$"]               # regexes removed from answer and target before comparing

Templates use ``{field}`` placeholders over a dataset row. The prompt hash recorded with results
covers every template and the few-shot setting, so scores are only compared like for like.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from internlocal.errors import UserError

BUILTIN_DIR = Path(__file__).with_name("builtin")


class ExtractFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    regex: str
    group: int = 0
    select: int = 0  # which match: 0 the first, -1 the last (lm-evaluation-harness's group_select)


class Task(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    version: str
    description: str = ""
    group: str | None = None
    output_type: Literal["multiple_choice", "generate_until", "perplexity"]
    dataset: str
    doc_to_text: str = "{text}"
    doc_to_choice: str | list[str] | None = None
    doc_to_target: str | None = None
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    num_fewshot: int = Field(0, ge=0)
    fewshot_seed: int = 1234
    until: list[str] = Field(default_factory=lambda: ["\n\n"])
    max_tokens: int = Field(32, ge=1)
    filter: ExtractFilter | None = None
    ignore: list[str] = Field(default_factory=list)  # regexes removed from answer and target before exact match
    ignore_case: bool = False
    apply_chat_template: bool = False
    source_path: str | None = Field(None, exclude=True)

    @property
    def dataset_path(self) -> Path:
        path = Path(self.dataset)
        if not path.is_absolute() and self.source_path:
            path = Path(self.source_path).parent / path
        return path

    @cached_property
    def docs(self) -> list[dict[str, Any]]:
        return load_rows(self.dataset_path)

    @model_validator(mode="after")
    def _chat_template_needs_a_prompt(self) -> Task:
        if self.apply_chat_template and self.output_type == "perplexity":
            raise ValueError("apply_chat_template has no meaning for perplexity (a text is scored as it is)")
        return self

    def prompt_hash(self) -> str:
        spec = self.model_dump(exclude={"description", "group", "source_path", "name"})
        # settings added later are left out at their defaults, so earlier tasks keep their hash
        for key, default in (("ignore", []), ("ignore_case", False)):
            if spec[key] == default:
                del spec[key]
        if spec["filter"] and spec["filter"]["select"] == 0:
            del spec["filter"]["select"]
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    # -- scoring generated answers -----------------------------------------------------------------

    def extract(self, response: str) -> str:
        """The answer in a generated response: the filter's match (first or last), or the whole text."""
        if self.filter is None:
            return response
        matches = list(re.finditer(self.filter.regex, response))
        if not matches:
            return ""
        try:
            match = matches[self.filter.select]
        except IndexError:
            match = matches[-1]
        return match.group(self.filter.group) or ""

    def normalize(self, text: str) -> str:
        for pattern in self.ignore:
            text = re.sub(pattern, "", text)
        return text.strip().lower() if self.ignore_case else text.strip()

    # -- rendering ---------------------------------------------------------------------------------

    def text(self, doc: dict[str, Any]) -> str:
        return render(self.doc_to_text, doc)

    def choices(self, doc: dict[str, Any]) -> list[str]:
        spec = self.doc_to_choice
        if spec is None:
            raise UserError(f"Task {self.name} is multiple_choice but has no doc_to_choice.")
        if isinstance(spec, list):
            return [render(c, doc) for c in spec]
        field = spec.strip("{}")
        if spec.startswith("{") and spec.endswith("}") and isinstance(doc.get(field), list):
            return [str(c) for c in doc[field]]
        raise UserError(f"Task {self.name}: doc_to_choice must name a list field or be a list of templates.")

    def target(self, doc: dict[str, Any]) -> str:
        if self.doc_to_target is None:
            raise UserError(f"Task {self.name} has no doc_to_target.")
        return render(self.doc_to_target, doc)

    def gold_index(self, doc: dict[str, Any], index: int) -> int:
        """The right choice's index; the target may be an index, a letter, or the choice's text."""
        choices = self.choices(doc)
        target = self.target(doc).strip()
        if target.isdigit() and int(target) < len(choices):
            return int(target)
        letters = "ABCDEFGHIJ"[: len(choices)]
        if len(target) == 1 and target.upper() in letters:
            return letters.index(target.upper())
        if target in choices:
            return choices.index(target)
        raise UserError(
            f"{self.dataset_path} row {index + 1}: the answer {target!r} is not one of the choices {choices}."
        )

    def fewshot_prefix(self, index: int) -> str:
        if not self.num_fewshot:
            return ""
        pool = [i for i in range(len(self.docs)) if i != index]
        rng = random.Random(self.fewshot_seed + index)
        shots = rng.sample(pool, min(self.num_fewshot, len(pool)))
        parts = []
        for i in shots:
            doc = self.docs[i]
            if self.output_type == "multiple_choice":
                answer = self.choices(doc)[self.gold_index(doc, i)]
            else:
                answer = self.target(doc)
            parts.append(self.text(doc) + self.target_delimiter + answer)
        return self.fewshot_delimiter.join(parts) + self.fewshot_delimiter


def render(template: str, doc: dict[str, Any]) -> str:
    try:
        return template.format(**doc)
    except KeyError as exc:
        raise UserError(f"The template {template!r} uses {exc}, which the dataset row does not have.") from None


def load_rows(path: Path) -> list[dict[str, Any]]:
    """JSONL (one object per line) or CSV (header row); errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"The dataset {path} does not exist.")
    rows: list[dict[str, Any]] = []
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            for n, row in enumerate(csv.DictReader(fh), start=2):
                if None in row or any(v is None for v in row.values()):
                    raise UserError(f"{path} line {n}: the row has a different number of columns than the header.")
                rows.append(dict(row))
        return rows
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path} line {n}: not valid JSON ({exc.msg}).") from None
            if not isinstance(row, dict):
                raise UserError(f"{path} line {n}: each line must be a JSON object.")
            rows.append(row)
    if not rows:
        raise UserError(f"{path} has no rows.")
    return rows


def load_task(path: Path) -> Task:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        task = Task.model_validate({**data, "source_path": str(path)})
    except yaml.YAMLError as exc:
        raise UserError(f"The task file {path} is not valid YAML: {exc}".replace("\n", " ")) from None
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UserError(f"The task file {path} is invalid: {'.'.join(map(str, err['loc']))}: {err['msg']}.") from None
    except (TypeError, AttributeError):
        raise UserError(f"The task file {path} must be a mapping of task settings.") from None
    return task


def task_dirs(home: Path | None = None) -> list[Path]:
    dirs = [BUILTIN_DIR]
    if home is not None:
        dirs.append(Path(home) / "tasks")
    return dirs


def all_tasks(home: Path | None = None) -> dict[str, Task]:
    tasks: dict[str, Task] = {}
    for directory in task_dirs(home):
        for path in sorted(directory.glob("*.yaml")) if directory.is_dir() else []:
            task = load_task(path)
            tasks[task.name] = task
    return tasks


def get_task(name_or_path: str, home: Path | None = None) -> Task:
    if name_or_path.endswith((".yaml", ".yml")) and Path(name_or_path).is_file():
        return load_task(Path(name_or_path))
    tasks = all_tasks(home)
    if name_or_path not in tasks:
        raise UserError(f"No evaluation task {name_or_path!r}; `internlocal eval tasks` lists them.")
    return tasks[name_or_path]


def add_custom_task(home: Path, name: str, data_file: Path, kind: str) -> Path:
    """A task from a plain file: ``question,A,B,C,D,answer`` (mcq) or ``question,answer`` (qa)."""
    rows = load_rows(Path(data_file))
    need = {"mcq": ["question", "A", "B", "C", "D", "answer"], "qa": ["question", "answer"]}
    if kind not in need:
        raise UserError(f"Custom task type {kind!r} is not mcq or qa.")
    for n, row in enumerate(rows, start=1):
        missing = [c for c in need[kind] if c not in row]
        if missing:
            raise UserError(f"{data_file} row {n}: missing column(s) {', '.join(missing)}.")
        if kind == "mcq" and str(row["answer"]).strip().upper() not in "ABCD":
            raise UserError(f"{data_file} row {n}: the answer {row['answer']!r} is not one of A, B, C, D.")
    folder = Path(home) / "tasks"
    folder.mkdir(parents=True, exist_ok=True)
    data_copy = folder / f"{name}{Path(data_file).suffix.lower()}"
    data_copy.write_bytes(Path(data_file).read_bytes())
    if kind == "mcq":
        spec = {
            "name": name,
            "version": "1",
            "output_type": "multiple_choice",
            "dataset": data_copy.name,
            "doc_to_text": "Question: {question}\nA. {A}\nB. {B}\nC. {C}\nD. {D}\nAnswer:",
            "doc_to_choice": ["A", "B", "C", "D"],
            "doc_to_target": "{answer}",
            "group": "custom",
        }
    else:
        spec = {
            "name": name,
            "version": "1",
            "output_type": "generate_until",
            "dataset": data_copy.name,
            "doc_to_text": "Question: {question}\nAnswer:",
            "doc_to_target": "{answer}",
            "until": ["\n"],
            "group": "custom",
        }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False), encoding="utf-8")
    load_task(path)
    return path
