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
from internlocal.i18n import _

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
    output_type: Literal["multiple_choice", "generate_until", "perplexity", "loglikelihood"]
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
            raise ValueError(_("apply_chat_template has no meaning for perplexity (a text is scored as it is)"))
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

    def score_generation(self, response: str, doc: dict[str, Any]) -> tuple[dict[str, float], str]:
        """({metric: score}, the extracted answer shown with the item) for one generated response."""
        answer = self.extract(response)
        return {"exact_match": float(self.normalize(answer) == self.normalize(self.target(doc)))}, answer.strip()

    @property
    def metric_names(self) -> set[str] | None:
        """The metrics the task asks for; None: every metric of its output type."""
        return None

    # -- rendering ---------------------------------------------------------------------------------

    def text(self, doc: dict[str, Any]) -> str:
        return render(self.doc_to_text, doc)

    def choices(self, doc: dict[str, Any]) -> list[str]:
        spec = self.doc_to_choice
        if spec is None:
            raise UserError(_("Task {name} is multiple_choice but has no doc_to_choice.").format(name=self.name))
        if isinstance(spec, list):
            return [render(c, doc) for c in spec]
        field = spec.strip("{}")
        if spec.startswith("{") and spec.endswith("}") and isinstance(doc.get(field), list):
            return [str(c) for c in doc[field]]
        raise UserError(
            _("Task {name}: doc_to_choice must name a list field or be a list of templates.").format(name=self.name)
        )

    def target(self, doc: dict[str, Any]) -> str:
        if self.doc_to_target is None:
            raise UserError(_("Task {name} has no doc_to_target.").format(name=self.name))
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
            _("{dataset} row {row}: the answer {target!r} is not one of the choices {choices}.").format(
                dataset=self.dataset_path, row=index + 1, target=target, choices=choices
            )
        )

    def loglikelihood_request(self, index: int, doc: dict[str, Any]) -> tuple[str, str]:
        """(context, continuation) of a ``loglikelihood`` task: the target after the target delimiter."""
        return self.context(index, doc), self.target_delimiter + self.target(doc)

    def rolling_text(self, doc: dict[str, Any]) -> str:
        """The text a ``perplexity`` task scores."""
        return self.text(doc)

    def count_words(self, text: str) -> int:
        return len(text.split())

    def context(self, index: int, doc: dict[str, Any]) -> str:
        """What the model reads for document ``index``: few-shot examples, then the question."""
        return self.fewshot_prefix(index) + self.text(doc)

    # -- CircularEval: the same question with its options rotated -------------------------------------

    def option_fields(self, doc: dict[str, Any]) -> list[str]:
        """The row's fields that hold the option texts (A…/c0…/choices), for CircularEval to rotate; refuses a
        task whose choices are not letters (nothing positional to rotate) or whose options it cannot find."""
        choices = [c.strip() for c in self.choices(doc)]
        if not all(len(c) == 1 and c.isalpha() for c in choices):
            raise UserError(
                _(
                    "CircularEval rotates lettered options; task {name} scores the option texts themselves "
                    "({examples}, …), where no letter stands for a position."
                ).format(name=self.name, examples=", ".join(repr(c) for c in choices[:2]))
            )
        fields = [c for c in choices if c in doc]
        if len(fields) != len(choices):
            fields = [f"c{i}" for i in range(len(choices)) if f"c{i}" in doc]
        if len(fields) != len(choices):
            fields = []
        if isinstance(doc.get("choices"), list) and len(doc["choices"]) == len(choices):
            fields.append("choices")
        if not fields:
            raise UserError(
                _(
                    "CircularEval cannot rotate task {name}: its rows hold the options in neither fields named "
                    "{fields}, c0…c{last}, nor a 'choices' list."
                ).format(name=self.name, fields=", ".join(choices), last=len(choices) - 1)
            )
        return fields

    def rotated(self, doc: dict[str, Any], shift: int) -> dict[str, Any]:
        """The row with its options moved ``shift`` places (OpenCompass's ABCD → BCDA → CDAB → DABC): the
        option shown at position j is the one at (j + shift); the right answer moves to (gold − shift)."""
        fields = self.option_fields(doc)
        out = dict(doc)
        texts = list(doc["choices"]) if fields[-1] == "choices" else None
        letter_fields = [f for f in fields if f != "choices"]
        if letter_fields:
            values = [doc[f] for f in letter_fields]
            out.update({f: values[(j + shift) % len(values)] for j, f in enumerate(letter_fields)})
        if texts is not None:
            out["choices"] = [texts[(j + shift) % len(texts)] for j in range(len(texts))]
        return out

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
        raise UserError(
            _("The template {template!r} uses {field}, which the dataset row does not have.").format(
                template=template, field=exc
            )
        ) from None


def load_rows(path: Path) -> list[dict[str, Any]]:
    """JSONL (one object per line) or CSV (header row); errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(_("The dataset {path} does not exist.").format(path=path))
    rows: list[dict[str, Any]] = []
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            for n, row in enumerate(csv.DictReader(fh), start=2):
                if None in row or any(v is None for v in row.values()):
                    raise UserError(
                        _("{path} line {n}: the row has a different number of columns than the header.").format(
                            path=path, n=n
                        )
                    )
                rows.append(dict(row))
        if not rows:
            raise UserError(_("{path} has no rows.").format(path=path))
        return rows
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(
                    _("{path} line {n}: not valid JSON ({reason}).").format(path=path, n=n, reason=exc.msg)
                ) from None
            if not isinstance(row, dict):
                raise UserError(_("{path} line {n}: each line must be a JSON object.").format(path=path, n=n))
            rows.append(row)
    if not rows:
        raise UserError(_("{path} has no rows.").format(path=path))
    return rows


def load_task(path: Path) -> Task:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        task = Task.model_validate({**data, "source_path": str(path)})
    except yaml.YAMLError as exc:
        raise UserError(
            _("The task file {path} is not valid YAML: {error}").format(path=path, error=exc).replace("\n", " ")
        ) from None
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UserError(
            _("The task file {path} is invalid: {field}: {reason}.").format(
                path=path, field=".".join(map(str, err["loc"])), reason=err["msg"]
            )
        ) from None
    except (TypeError, AttributeError):
        raise UserError(_("The task file {path} must be a mapping of task settings.").format(path=path)) from None
    return task


def task_dirs(home: Path | None = None) -> list[Path]:
    dirs = [BUILTIN_DIR]
    if home is not None:
        dirs.append(Path(home) / "tasks")
    return dirs


def all_tasks(home: Path | None = None) -> dict[str, Task]:
    """Our task files, built in and the user's; lm-eval files placed among them are run by path or
    ``--include-path`` (their code may need the user's trust), so they are left out here."""
    from internlocal.evals.lmeval import is_lmeval_file

    tasks: dict[str, Task] = {}
    for directory in task_dirs(home):
        for path in sorted(directory.glob("*.yaml")) if directory.is_dir() else []:
            if is_lmeval_file(path):
                continue
            task = load_task(path)
            tasks[task.name] = task
    return tasks


def get_task(name_or_path: str, home: Path | None = None) -> Task:
    tasks = get_tasks(name_or_path, home)
    if len(tasks) != 1:
        raise UserError(
            _("{name} is a group of {count} tasks; name one of them.").format(name=name_or_path, count=len(tasks))
        )
    return tasks[0]


def get_tasks(
    name_or_path: str,
    home: Path | None = None,
    *,
    include_paths: list[Path] | None = None,
    trusted: list[Path] | None = None,
) -> list[Task]:
    """The task a name or file stands for: ours, or lm-eval's (a group file or group name gives its tasks).
    lm-eval names are looked up in ``include_paths``; ``trusted`` folders may run their ``!function`` code."""
    from internlocal.evals.lmeval import find_lmeval, is_lmeval_file, load_lmeval

    if name_or_path.endswith((".yaml", ".yml")) and Path(name_or_path).is_file():
        path = Path(name_or_path)
        if is_lmeval_file(path):
            return list(load_lmeval(path, trusted=trusted or [], search=include_paths or [], home=home))
        return [load_task(path)]
    tasks = all_tasks(home)
    if name_or_path in tasks:
        return [tasks[name_or_path]]
    if include_paths:
        return list(find_lmeval(name_or_path, include_paths, trusted=trusted or [], home=home))
    raise UserError(_("No evaluation task {name!r}; `internlocal eval tasks` lists them.").format(name=name_or_path))


def add_custom_task(home: Path, name: str, data_file: Path, kind: str) -> Path:
    """A task from a plain file: ``question,A,B,C,D,answer`` (mcq) or ``question,answer`` (qa)."""
    rows = load_rows(Path(data_file))
    need = {"mcq": ["question", "A", "B", "C", "D", "answer"], "qa": ["question", "answer"]}
    if kind not in need:
        raise UserError(_("Custom task type {kind!r} is not mcq or qa.").format(kind=kind))
    for n, row in enumerate(rows, start=1):
        missing = [c for c in need[kind] if c not in row]
        if missing:
            raise UserError(
                _("{data_file} row {n}: missing column(s) {columns}.").format(
                    data_file=data_file, n=n, columns=", ".join(missing)
                )
            )
        if kind == "mcq" and str(row["answer"]).strip().upper() not in "ABCD":
            raise UserError(
                _("{data_file} row {n}: the answer {answer!r} is not one of A, B, C, D.").format(
                    data_file=data_file, n=n, answer=row["answer"]
                )
            )
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
