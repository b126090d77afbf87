"""lm-evaluation-harness task files, run as they are.

An lm-eval task YAML (``task:``, ``dataset_path``, Jinja ``doc_to_text``…) becomes an ``LmEvalTask``: a
``Task`` whose prompts, choices, targets, few-shot examples, filters and metrics follow lm-eval's rules, so
the same YAML gives the same requests and the same scores through either tool. What lm-eval does here:

- a ``doc_to_*`` that names a field is that field; otherwise it is a Jinja template (lm-eval's environment:
  StrictUndefined, trailing newlines kept, a ``regex_replace`` filter); a ``doc_to_choice`` template renders
  a Python list literal; a target that renders as digits is a choice index;
- the context is ``description`` + few-shot examples (``text + target_delimiter + answer +
  fewshot_delimiter`` each) + the question; few-shot examples come from ``fewshot_split`` (else the test split
  without the question itself), drawn by one ``random.Random(1234)`` in document order, or the first N
  (``fewshot_config.sampler: first_n``);
- ``filter_list`` pipelines (``regex`` with lm-eval's findall semantics and "[invalid]" fallback,
  ``take_first``, ``remove_whitespace``, ``lowercase``, ``uppercase``) each give their own
  ``exact_match,<name>`` score, with ``exact_match``'s ``ignore_case``, ``ignore_punctuation`` and
  ``regexes_to_ignore``.

``include:`` merges a base YAML (relative to the file), group files (``group:`` + ``task: [...]``) expand to
their tasks, and ``--include-path`` folders are searched for task names. ``!function module.name`` (Python
next to the YAML) runs only from folders the user trusts; anything else lm-eval knows and this does not is
refused by name, never ignored.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import random
import re
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ConfigDict, Field, PrivateAttr

from internlocal.errors import UserError
from internlocal.evals.tasks import Task
from internlocal.i18n import _

FILE_TYPES = {"json": (".json", ".jsonl"), "csv": (".csv",), "parquet": (".parquet",)}
SPLITS = ("test_split", "validation_split")
OUTPUT_TYPES = {
    "multiple_choice": "multiple_choice",
    "generate_until": "generate_until",
    "loglikelihood": "loglikelihood",
    "loglikelihood_rolling": "perplexity",
}
METRICS = {
    "multiple_choice": {"acc", "acc_norm"},
    "generate_until": {"exact_match"},
    "loglikelihood": {"acc", "perplexity"},
    "loglikelihood_rolling": {"word_perplexity", "byte_perplexity", "bits_per_byte"},
}
EXACT_MATCH_OPTIONS = {"ignore_case", "ignore_punctuation", "regexes_to_ignore", "ignore_numbers"}
FILTERS = {"regex", "take_first", "remove_whitespace", "lowercase", "uppercase"}
FUNCTION_FIELDS = {"process_docs", "doc_to_text", "doc_to_target", "doc_to_choice"}
# keys that describe a task without changing what is asked or how it is scored here
HARMLESS = {
    "task",
    "tag",
    "task_alias",
    "group_alias",
    "metadata",
    "should_decontaminate",
    "doc_to_decontamination_query",
    "training_split",
    "dataset_name",
    "unsafe_code",
    "include",
}
SUPPORTED = {
    "dataset_path",
    "dataset_kwargs",
    "test_split",
    "validation_split",
    "fewshot_split",
    "fewshot_config",
    "num_fewshot",
    "fewshot_delimiter",
    "target_delimiter",
    "description",
    "output_type",
    "doc_to_text",
    "doc_to_choice",
    "doc_to_target",
    "process_docs",
    "generation_kwargs",
    "filter_list",
    "metric_list",
    "repeats",
}


@dataclass(frozen=True)
class FunctionRef:
    """``!function utils.process_docs``: a function in a Python file beside the YAML file that names it (an
    included base file's functions live beside the base file, as lm-eval resolves them)."""

    name: str
    folder: str = ""

    def __str__(self) -> str:
        return f"!function {self.name}"


class _Loader(yaml.SafeLoader):
    pass


def _function_ref(loader: yaml.SafeLoader, node: yaml.Node) -> FunctionRef:
    if not isinstance(node, yaml.ScalarNode):
        raise yaml.constructor.ConstructorError(None, None, "!function takes module.name", node.start_mark)
    return FunctionRef(str(loader.construct_scalar(node)))


_Loader.add_constructor("!function", _function_ref)


@lru_cache(maxsize=256)
def _template(source: str):
    """A compiled Jinja template in lm-eval's environment (StrictUndefined, trailing newlines kept, regex_replace)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.BaseLoader(), undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["regex_replace"] = lambda s, pattern, repl, count=0: re.sub(pattern, repl, s, count=count)
    return env.from_string(source)


class LmEvalTask(Task):
    """A task from an lm-eval YAML; ``spec`` is the merged file (after ``include:``)."""

    model_config = ConfigDict(extra="forbid")

    output_type: str  # type: ignore[assignment]  # multiple_choice | generate_until | loglikelihood | perplexity
    spec: dict[str, Any] = Field(default_factory=dict)
    trusted: list[str] = Field(default_factory=list, exclude=True)  # folders whose !function code may run
    home: str | None = Field(None, exclude=True)  # where a Hub dataset's files are kept
    _functions: dict[str, Callable[..., Any]] = PrivateAttr(default_factory=dict)
    _shots: list[list[dict[str, Any]]] = PrivateAttr(default_factory=list)

    # -- the dataset -------------------------------------------------------------------------------

    @property
    def from_hub(self) -> bool:
        return self.spec.get("dataset_path") not in FILE_TYPES

    def _hub_files(self, split: str) -> list[Path]:
        """A Hub dataset's Parquet files of ``split`` (``<dataset_name>/<split>-*.parquet`` or
        ``…/<split>/*.parquet``), downloaded once into ``<home>/benchmarks/lm-eval/`` through the store."""
        from internlocal.hub.fetch import fetch_dataset
        from internlocal.hub.sources import NoMatchingFile

        repo, config = str(self.spec["dataset_path"]), self.spec.get("dataset_name")
        if self.home is None:
            raise UserError(
                _("Task {name} reads the Hub dataset {repo}; run it through `internlocal eval run`.").format(
                    name=self.name, repo=repo
                )
            )
        dest = Path(self.home) / "benchmarks" / "lm-eval" / repo.replace("/", "__") / str(config or "default") / split
        if any(dest.rglob("*.parquet")):
            return sorted(dest.rglob("*.parquet"))
        # a named configuration's folder; without a name, the layouts of a repository with one configuration
        # (never a glob over every folder: several configurations' rows must not mix)
        layouts = [f"{config}/{split}"] if config else [f"data/{split}", split, f"default/{split}"]
        for layout in layouts:
            try:
                fetch_dataset(Path(self.home) / "store", dest, f"hf:{repo}:{layout}[-/]*.parquet")
            except NoMatchingFile:
                continue
            return sorted(dest.rglob("*.parquet"))
        where = f"{config}/" if config else _("data/, the top folder or default/")
        message = (
            _("Task {name}: {repo} has no Parquet files of the {split} split in {where}.")
            if config
            else _(
                "Task {name}: {repo} has no Parquet files of the {split} split in {where}; "
                "name its configuration with dataset_name."
            )
        )
        raise UserError(message.format(name=self.name, repo=repo, split=split, where=where))

    def _split_files(self, split: str) -> list[Path]:
        if self.from_hub:
            return self._hub_files(split)
        kwargs = self.spec.get("dataset_kwargs") or {}
        files = kwargs.get("data_files")
        if isinstance(files, dict):
            files = files.get(split)
        elif split != self.spec.get("test_split", self.spec.get("validation_split", "train")):
            files = None  # one file list is the evaluated split only (the datasets library names it "train")
        if files is None:
            raise UserError(
                _("Task {name}: dataset_kwargs.data_files has no {split!r} split.").format(name=self.name, split=split)
            )
        paths = []
        for name in [files] if isinstance(files, str) else list(files):
            path = Path(name).expanduser()  # relative: not beside its file (read_yaml anchors those), so cwd's
            if not path.is_absolute():
                path = Path.cwd() / path
            if not path.is_file():
                raise UserError(
                    _("Task {task}: the data file {name} does not exist.").format(task=self.name, name=name)
                )
            paths.append(path)
        return paths

    def _rows(self, split: str) -> list[dict[str, Any]]:
        from internlocal.data.formats import read_rows

        kind = "parquet" if self.from_hub else self.spec.get("dataset_path")
        rows: list[dict[str, Any]] = []
        for path in self._split_files(split):
            if path.suffix.lower() not in FILE_TYPES.get(str(kind), ()):
                raise UserError(
                    _("Task {name}: {file} is not a {kind} file.").format(name=self.name, file=path.name, kind=kind)
                )
            rows += [row for __, row in read_rows(path)]
        if "process_docs" in self.spec:
            rows = self._call("process_docs", rows)
        return rows

    @property
    def evaluated_split(self) -> str:
        for key in SPLITS:
            if self.spec.get(key):
                return str(self.spec[key])
        raise UserError(_("Task {name} names no test_split or validation_split to evaluate.").format(name=self.name))

    @cached_property
    def docs(self) -> list[dict[str, Any]]:
        rows = self._rows(self.evaluated_split)
        if not rows:
            raise UserError(
                _("Task {name}: the {split} split has no rows.").format(name=self.name, split=self.evaluated_split)
            )
        return rows

    @property
    def _named_fewshot_split(self) -> str | None:
        named = (self.spec.get("fewshot_config") or {}).get("split") or self.spec.get("fewshot_split")
        return str(named) if named else None  # fewshot_config's split wins, as in lm-eval's FewshotConfig

    @property
    def fewshot_split(self) -> str:
        """lm-eval's rule: the named few-shot split, else the training split, else validation, else the test split."""
        named = self._named_fewshot_split
        if named:
            return named
        for key in ("training_split", "validation_split", "test_split"):
            if self.spec.get(key):
                return str(self.spec[key])
        return self.evaluated_split

    @cached_property
    def fewshot_docs(self) -> list[dict[str, Any]]:
        split = self.fewshot_split
        return self.docs if split == self.evaluated_split else self._rows(split)

    # -- functions from the task's folder ------------------------------------------------------------

    def _call(self, field: str, *args: Any) -> Any:
        function = self._functions.get(field)
        if function is None:
            function = load_function(self.spec[field], trusted=self.trusted, task=self.name)
            self._functions[field] = function
        if field == "process_docs":
            return _process_docs(function, args[0])
        return function(*args)

    def _field(self, field: str, doc: dict[str, Any]) -> Any:
        """lm-eval's ``doc_to_*``: a field name, a Jinja template, a function, a list or an int."""
        spec = self.spec.get(field)
        if isinstance(spec, FunctionRef):
            return self._call(field, doc)
        if isinstance(spec, str):
            if spec in doc:
                value = doc[spec]
                # a CSV cell is text where lm-eval (pandas) reads a number: a digit target is still an index
                if field == "doc_to_target" and isinstance(value, str) and value.isdigit() and self._has_choices:
                    return int(value)
                return value
            try:
                rendered = _template(spec).render(**doc)
            except Exception as exc:  # jinja2's UndefinedError and TemplateSyntaxError: one sentence
                raise UserError(
                    _("Task {name}: {field} {spec!r} fails on a row: {error}.").format(
                        name=self.name, field=field, spec=spec, error=exc
                    )
                ) from None
            if field == "doc_to_choice":
                try:
                    return ast.literal_eval(rendered)
                except (ValueError, SyntaxError):
                    raise UserError(
                        _("Task {name}: doc_to_choice rendered {rendered!r}, not a list.").format(
                            name=self.name, rendered=rendered
                        )
                    ) from None
            if rendered.isdigit() and self._has_choices and field != "description":
                return int(rendered)
            if field == "doc_to_target" and len(rendered) >= 2 and rendered[0] == "[" and rendered[-1] == "]":
                try:
                    return ast.literal_eval(rendered)
                except (ValueError, SyntaxError):
                    return rendered
            return rendered
        return spec

    @property
    def _has_choices(self) -> bool:
        return self.spec.get("doc_to_choice") is not None

    # -- what the runner asks ------------------------------------------------------------------------

    def text(self, doc: dict[str, Any]) -> str:
        text = self._field("doc_to_text", doc)
        if not isinstance(text, str):
            raise UserError(
                _(
                    "Task {name}: doc_to_text gave {type}; tasks with several inputs "
                    "(a context per choice, as in winogrande) are not supported."
                ).format(name=self.name, type=type(text).__name__)
            )
        return text

    def choices(self, doc: dict[str, Any]) -> list[str]:
        choices = self._field("doc_to_choice", doc)
        if isinstance(choices, dict):
            choices = list(choices.values())
        if not isinstance(choices, list):
            raise UserError(
                _("Task {name}: doc_to_choice gave {choices!r}, not a list of choices.").format(
                    name=self.name, choices=choices
                )
            )
        return [str(c) for c in choices]

    def _target(self, doc: dict[str, Any]) -> Any:
        if self.spec.get("doc_to_target") is None:
            raise UserError(_("Task {name} has no doc_to_target.").format(name=self.name))
        return self._field("doc_to_target", doc)

    def target(self, doc: dict[str, Any]) -> str:
        """The answer as text (a few-shot example's answer too): the chosen choice's text for an index, the first
        of a list of acceptable answers."""
        target = self._target(doc)
        if isinstance(target, int) and self._has_choices:
            return self.choices(doc)[target]
        return str(target[0] if isinstance(target, list) else target)

    def loglikelihood_request(self, index: int, doc: dict[str, Any]) -> tuple[str, str]:
        # lm-eval asks for the target as it is: a file that wants a leading space writes it (lambada's "{{' '+…}}")
        return self.context(index, doc), self.target(doc)

    def rolling_text(self, doc: dict[str, Any]) -> str:
        return self.target(doc)  # lm-eval's loglikelihood_rolling scores doc_to_target

    def count_words(self, text: str) -> int:
        return len(re.split(r"\s+", text))  # lm-eval's word count for word_perplexity

    def gold_index(self, doc: dict[str, Any], index: int) -> int:
        target, choices = self._target(doc), self.choices(doc)
        if isinstance(target, int) and 0 <= target < len(choices):
            return target
        if isinstance(target, str) and target in choices:
            return choices.index(target)
        raise UserError(
            _("Task {name} row {row}: the target {target!r} is not one of the choices {choices}.").format(
                name=self.name, row=index + 1, target=target, choices=choices
            )
        )

    def _sample_shots(self, upto: int) -> None:
        """Few-shot examples for documents 0..upto, drawn in document order from one seeded generator, as
        lm-eval's sampler draws them (so document i's examples depend on how many were drawn before it)."""
        config = self.spec.get("fewshot_config") or {}
        first_n = config.get("sampler") == "first_n"
        pool = self.fewshot_docs
        # lm-eval leaves the question out of its own examples when the named few-shot split equals the test
        # split, and both unnamed counts as equal too
        leave_out = self._named_fewshot_split == self.spec.get("test_split")
        n = self.num_fewshot
        if len(pool) < n + (1 if leave_out else 0):
            raise UserError(
                _("Task {name} asks for {n} few-shot examples; its few-shot split has {count}.").format(
                    name=self.name, n=n, count=len(pool)
                )
            )
        rng = random.Random(self.fewshot_seed)
        shots: list[list[dict[str, Any]]] = []
        for doc in self.docs[: upto + 1]:
            if first_n:
                picked = [d for d in pool if d != doc][:n] if leave_out else pool[:n]
            elif leave_out:
                picked = [d for d in rng.sample(pool, n + 1) if d != doc][:n]
                if len(picked) < n:  # the question's duplicates were drawn too: draw again without any of them
                    picked = rng.sample([d for d in pool if d != doc], n)
            else:
                picked = rng.sample(pool, n)
            shots.append(picked)
        self._shots = shots

    def context(self, index: int, doc: dict[str, Any]) -> str:
        description = self._description(doc)
        if not self.num_fewshot:
            return description + self.text(doc)
        if len(self._shots) <= index:
            self._sample_shots(max(index, len(self.docs) - 1))
        examples = "".join(
            self.text(shot) + self.target_delimiter + self.target(shot) + self.fewshot_delimiter
            for shot in self._shots[index]
        )
        return description + examples + self.text(doc)

    def _description(self, doc: dict[str, Any]) -> str:
        return str(self._field("description", doc) or "")  # a field name or a template, as lm-eval resolves it

    def fewshot_prefix(self, index: int) -> str:
        """Everything before the question (the base API; the runner asks for ``context``)."""
        doc = self.docs[index]
        return self.context(index, doc).removesuffix(self.text(doc))

    # -- scoring generated answers -----------------------------------------------------------------

    def score_generation(self, response: str, doc: dict[str, Any]) -> tuple[dict[str, float], str]:
        targets = self._target(doc)
        targets = [str(t) for t in targets] if isinstance(targets, list) else [self.target(doc)]
        scores, shown = {}, ""
        for name, steps in self.filter_pipelines:
            answer = response
            for step in steps:
                answer = _apply_filter(step, answer)
            key = "exact_match" if name == "none" else f"exact_match,{name}"
            scores[key] = float(any(_exact_match(answer, t, self.exact_match_options) for t in targets))
            shown = shown or answer
        return scores, shown

    @property
    def filter_pipelines(self) -> list[tuple[str, list[dict[str, Any]]]]:
        pipelines = self.spec.get("filter_list") or [{"name": "none", "filter": [{"function": "take_first"}]}]
        return [(str(p.get("name", "none")), list(p.get("filter", []))) for p in pipelines]

    @property
    def exact_match_options(self) -> dict[str, Any]:
        for entry in self.spec.get("metric_list") or []:
            if entry.get("metric") == "exact_match":
                return {k: v for k, v in entry.items() if k in EXACT_MATCH_OPTIONS}
        return {}

    @property
    def metric_names(self) -> set[str] | None:
        entries = self.spec.get("metric_list")
        return {str(e["metric"]) for e in entries} if entries else None

    def prompt_hash(self) -> str:
        """Over the file's settings; data files by name, so the same task from another folder shares its row."""
        spec = dict(self.spec)
        if isinstance(spec.get("dataset_kwargs"), dict):
            files = spec["dataset_kwargs"].get("data_files")
            spec["dataset_kwargs"] = {**spec["dataset_kwargs"], "data_files": _file_names(files)}
        text = json.dumps(spec, sort_keys=True, default=str, ensure_ascii=False)
        return hashlib.sha256(f"lm-eval:{text}:{self.fewshot_seed}".encode()).hexdigest()[:16]


def _process_docs(function: Callable[..., Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """lm-eval hands process_docs a ``datasets.Dataset``; give it one where the library is installed."""
    try:
        import datasets  # type: ignore[import-untyped]
    except ImportError:
        return list(function(rows))
    return [dict(row) for row in function(datasets.Dataset.from_list(rows))]


def _apply_filter(step: dict[str, Any], answer: str) -> str:
    kind = step.get("function")
    if kind == "regex":
        pattern = re.compile(step.get("regex_pattern", r"#### (\-?[0-9\.\,]+)"))
        found: list[Any] = pattern.findall(answer)
        fallback = step.get("fallback", "[invalid]")
        if not found:
            return fallback
        try:
            match = found[int(step.get("group_select", 0))]
        except IndexError:
            return fallback
        if isinstance(match, tuple):  # several groups: the first that matched
            match = next((m for m in match if m), fallback)
        return match.strip()
    if kind == "remove_whitespace":
        return answer.strip()
    if kind == "lowercase":
        return answer.lower()
    if kind == "uppercase":
        return answer.upper()
    return answer  # take_first: one generation per question here


def _exact_match(answer: str, target: str, options: dict[str, Any]) -> bool:
    for pattern in options.get("regexes_to_ignore") or []:
        answer, target = re.sub(pattern, "", answer), re.sub(pattern, "", target)
    if options.get("ignore_case"):
        answer, target = answer.lower(), target.lower()
    if options.get("ignore_punctuation"):
        table = str.maketrans("", "", string.punctuation)
        answer, target = answer.translate(table), target.translate(table)
    if options.get("ignore_numbers"):
        table = str.maketrans("", "", string.digits)
        answer, target = answer.translate(table), target.translate(table)
    return answer == target


def is_trusted(folder: Path, trusted: Iterable[str | Path]) -> bool:
    folder = folder.resolve()
    return any(folder == Path(t).resolve() or Path(t).resolve() in folder.parents for t in trusted)


def load_function(ref: FunctionRef, *, trusted: Iterable[str | Path], task: str) -> Callable[..., Any]:
    """The function a ``!function`` names, from the folder of the file that names it, if the user trusts it."""
    folder = Path(ref.folder or ".").resolve()
    if not is_trusted(folder, trusted):
        raise UserError(
            _(
                "Task {task} runs Python code ({ref}) from {folder}; "
                "pass --trust-code {folder} if you trust that folder."
            ).format(task=task, ref=ref, folder=folder)
        )
    module_name, __, name = ref.name.rpartition(".")
    file = folder / f"{module_name.replace('.', '/')}.py"
    if not module_name or not file.is_file():
        raise UserError(
            _("Task {task}: {ref} needs {file}, which does not exist.").format(task=task, ref=ref, file=file)
        )
    spec = importlib.util.spec_from_file_location(f"internlocal_task_{module_name}", file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function = getattr(module, name, None)
    if not callable(function):
        raise UserError(_("Task {task}: {file} has no function {name}.").format(task=task, file=file.name, name=name))
    return function


# -- reading the files -------------------------------------------------------------------------------


def is_lmeval_file(path: Path) -> bool:
    """An lm-eval task or group file (``task:``/``group:`` and no ``name:``), as opposed to ours."""
    data = read_yaml(path)
    return isinstance(data, dict) and ("task" in data or "group" in data or "include" in data) and "name" not in data


def read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> Any:
    """The file's mapping with ``include:`` merged under it (the including file wins)."""
    path = Path(path)
    if path.resolve() in seen:
        raise UserError(
            _("{path} includes itself (through {chain}).").format(path=path, chain=" → ".join(p.name for p in seen))
        )
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # SafeLoader + !function
    except yaml.YAMLError as exc:
        raise UserError(
            _("The task file {path} is not valid YAML: {error}").format(path=path, error=exc).replace("\n", " ")
        ) from None
    except OSError as exc:
        raise UserError(
            _("The task file {path} cannot be read ({reason}).").format(path=path, reason=exc.strerror)
        ) from None
    if isinstance(data, dict):  # each !function and data file belongs to the folder of the file that names it
        folder = str(path.parent.resolve())
        data = {k: FunctionRef(v.name, folder) if isinstance(v, FunctionRef) else v for k, v in data.items()}
        if isinstance(data.get("dataset_kwargs"), dict) and "data_files" in data["dataset_kwargs"]:
            files = _anchored(data["dataset_kwargs"]["data_files"], Path(folder))
            data["dataset_kwargs"] = {**data["dataset_kwargs"], "data_files": files}
    if isinstance(data, dict) and "include" in data:
        base_path = path.parent / str(data["include"])
        if not base_path.is_file():
            raise UserError(
                _("{path}: the included file {include} does not exist.").format(path=path, include=data["include"])
            )
        base = read_yaml(base_path, (*seen, path.resolve()))
        data = {**(base if isinstance(base, dict) else {}), **{k: v for k, v in data.items() if k != "include"}}
    return data


def _file_names(files: Any) -> Any:
    if isinstance(files, dict):
        return {split: _file_names(f) for split, f in files.items()}
    if isinstance(files, list):
        return [_file_names(f) for f in files]
    return Path(str(files)).name


def _anchored(files: Any, folder: Path) -> Any:
    """Relative data files found beside the file that names them, made absolute; others left for the working
    directory, where lm-eval (the datasets library) looks for them."""
    if isinstance(files, dict):
        return {split: _anchored(f, folder) for split, f in files.items()}
    if isinstance(files, list):
        return [_anchored(f, folder) for f in files]
    if isinstance(files, str) and not Path(files).expanduser().is_absolute() and (folder / files).exists():
        return str(folder / files)
    return files


def load_lmeval(
    path: Path,
    *,
    trusted: Iterable[Path] = (),
    search: Iterable[Path] = (),
    home: Path | None = None,
    groups: tuple[str, ...] = (),
) -> list[LmEvalTask]:
    """The tasks of an lm-eval task file, or of a group file (each task with the group as its group); ``groups``
    are the groups being expanded around this one (a group inside itself is refused)."""
    path = Path(path)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise UserError(_("The task file {path} must be a mapping of task settings.").format(path=path))
    if "group" in data and isinstance(data.get("task"), list):
        tasks = _group(path, data, trusted=list(trusted), search=list(search), groups=groups)
    else:
        tasks = [_task(path, data, trusted=list(trusted))]
    for task in tasks:
        task.home = str(home) if home is not None else None
    return tasks


def _group(
    path: Path, data: dict[str, Any], *, trusted: list[Path], search: list[Path], groups: tuple[str, ...]
) -> list[LmEvalTask]:
    name = str(data["group"])
    if name in groups:
        raise UserError(
            _("Group {name} ({path}) contains itself (through {chain}).").format(
                name=name, path=path, chain=" → ".join((*groups, name))
            )
        )
    if data.get("aggregate_metric_list"):
        for entry in data["aggregate_metric_list"]:
            if entry.get("weight_by_size", True):  # lm-eval's default; the leaderboard averages tasks equally
                raise UserError(
                    _(
                        "Group {name}: aggregate_metric_list with weight_by_size is not supported "
                        "(internlocal's group average weighs each task equally); set weight_by_size: false."
                    ).format(name=name)
                )
    tasks: list[LmEvalTask] = []
    for entry in data["task"]:
        if isinstance(entry, str):
            tasks += find_lmeval(entry, [path.parent, *search], trusted=trusted, groups=(*groups, name))
        elif isinstance(entry, dict):
            tasks.append(_task(path, entry, trusted=trusted))
        else:
            raise UserError(_("{path}: a group's task entry must be a task name or a task mapping.").format(path=path))
    return [t.model_copy(update={"group": str(data["group"])}) for t in tasks]


def _task(path: Path, data: dict[str, Any], *, trusted: list[Path]) -> LmEvalTask:
    name = data.get("task")
    if not isinstance(name, str) or not name:
        raise UserError(_("The task file {path} has no task name (task: NAME).").format(path=path))
    unknown = sorted(set(data) - SUPPORTED - HARMLESS)
    if unknown:
        message = (
            _("Task {name} ({path}): {keys} is not supported.")
            if len(unknown) == 1
            else _("Task {name} ({path}): {keys} are not supported.")
        )
        raise UserError(message.format(name=name, path=path, keys=", ".join(unknown)))
    output_type = data.get("output_type", "generate_until")
    if output_type not in OUTPUT_TYPES:
        raise UserError(
            _("Task {name}: output_type {output_type!r} is not supported.").format(name=name, output_type=output_type)
        )
    kind = data.get("dataset_path")
    if not isinstance(kind, str) or (kind not in FILE_TYPES and not re.fullmatch(r"[\w.-]+/[\w.-]+", kind)):
        raise UserError(
            _(
                "Task {name}: dataset_path {kind!r} is not supported; use json, csv or parquet with "
                "dataset_kwargs.data_files, or a Hugging Face dataset repository (org/name) that publishes Parquet."
            ).format(name=name, kind=kind)
        )
    if kind not in FILE_TYPES and data.get("dataset_kwargs"):
        raise UserError(
            _("Task {name}: dataset_kwargs are not supported for a Hub dataset ({kind}).").format(name=name, kind=kind)
        )
    for entry in data.get("metric_list") or []:
        metric = entry.get("metric") if isinstance(entry, dict) else entry
        if metric not in METRICS[output_type]:
            raise UserError(
                _("Task {name}: metric {metric!r} is not supported for {output_type}.").format(
                    name=name, metric=metric, output_type=output_type
                )
            )
        if isinstance(entry, dict) and entry.get("aggregation", "mean") not in (
            "mean",
            "perplexity",
            "weighted_perplexity",
            "bits_per_byte",
        ):
            raise UserError(
                _("Task {name}: aggregation {aggregation!r} is not supported.").format(
                    name=name, aggregation=entry["aggregation"]
                )
            )
    for pipeline in data.get("filter_list") or []:
        for step in pipeline.get("filter", []):
            if step.get("function") not in FILTERS:
                raise UserError(
                    _("Task {name}: filter {filter!r} is not supported.").format(name=name, filter=step.get("function"))
                )
    if int(data.get("repeats", 1)) != 1:
        raise UserError(_("Task {name}: repeats other than 1 are not supported.").format(name=name))
    for key, value in data.items():
        if isinstance(value, FunctionRef) and key not in FUNCTION_FIELDS:
            raise UserError(_("Task {name}: {key}: {value} is not supported.").format(name=name, key=key, value=value))
    generation = data.get("generation_kwargs") or {}
    if generation.get("do_sample") or float(generation.get("temperature", 0) or 0) > 0:
        raise UserError(
            _(
                "Task {name}: sampled generation (do_sample, temperature > 0) is not supported; scores here are greedy."
            ).format(name=name)
        )
    fewshot = data.get("fewshot_config") or {}
    for key in sorted(set(fewshot) - {"sampler", "split"}):
        raise UserError(_("Task {name}: fewshot_config.{key} is not supported.").format(name=name, key=key))
    if fewshot.get("sampler", "default") not in ("default", "first_n"):
        raise UserError(
            _("Task {name}: fewshot sampler {sampler!r} is not supported.").format(
                name=name, sampler=fewshot["sampler"]
            )
        )
    for key in sorted(set(data.get("dataset_kwargs") or {}) - {"data_files"}):
        raise UserError(_("Task {name}: dataset_kwargs.{key} is not supported.").format(name=name, key=key))
    for key in sorted(set(generation) - {"until", "max_gen_toks", "do_sample", "temperature"}):
        raise UserError(_("Task {name}: generation_kwargs.{key} is not supported.").format(name=name, key=key))
    delimiter = data.get("fewshot_delimiter", "\n\n")
    until = generation.get("until", [delimiter])
    metadata = data.get("metadata") or {}
    task = LmEvalTask(
        name=re.sub(r"[^A-Za-z0-9_.-]", "_", name),
        version=str(metadata.get("version", "lm-eval")),
        description=_("lm-eval task ({file})").format(file=path.name),
        group=None,
        output_type=OUTPUT_TYPES[output_type],
        dataset=f"{kind}:{path.name}",
        doc_to_text="",
        target_delimiter=data.get("target_delimiter", " "),
        fewshot_delimiter=delimiter,
        num_fewshot=int(data.get("num_fewshot") or 0),
        until=[until] if isinstance(until, str) else list(until),  # lm-eval takes one stop string as a list of one
        max_tokens=int(generation.get("max_gen_toks", 256)),
        spec=data,
        trusted=[str(Path(t).resolve()) for t in trusted],
        source_path=str(path),
    )
    for field in FUNCTION_FIELDS:  # refuse untrusted code now, before a model loads
        if isinstance(data.get(field), FunctionRef):
            task._functions[field] = load_function(data[field], trusted=trusted, task=name)
    return task


def find_lmeval(
    name: str,
    folders: Iterable[Path],
    *,
    trusted: Iterable[Path] = (),
    home: Path | None = None,
    groups: tuple[str, ...] = (),
) -> list[LmEvalTask]:
    """The task or group called ``name`` in lm-eval YAMLs under ``folders``, or every task tagged ``name``."""
    folders = [Path(f) for f in folders]
    tagged: list[Path] = []
    for folder in folders:
        for path in sorted(folder.rglob("*.y*ml")) if folder.is_dir() else []:
            try:
                data = read_yaml(path)
            except UserError:
                continue
            if not isinstance(data, dict):
                continue
            if name in (data.get("task"), data.get("group")):
                return load_lmeval(path, trusted=trusted, search=folders, home=home, groups=groups)
            tags = data.get("tag") or []
            if name in ([tags] if isinstance(tags, str) else tags):
                tagged.append(path)
    if tagged:  # a tag (lm-eval's mmlu_stem_tasks): its tasks, in file order
        return [t for path in tagged for t in load_lmeval(path, trusted=trusted, home=home, groups=groups)]
    raise UserError(
        _("No lm-eval task, group or tag {name!r} under {folders}.").format(
            name=name, folders=", ".join(map(str, folders))
        )
    )


# -- writing ours out as lm-eval YAML ----------------------------------------------------------------


def _jinja_template(template: str) -> str:
    """Our ``str.format`` template as Jinja: ``{field}`` → ``{{field}}``; literal braces (``{{`` in ours) kept
    literal inside ``{% raw %}``."""
    out = []
    for literal, field, __, __ in string.Formatter().parse(template):
        out.append(f"{{% raw %}}{literal}{{% endraw %}}" if "{" in literal or "}" in literal else literal)
        if field is not None:
            out.append("{{" + field + "}}")
    return "".join(out)


def to_lmeval_yaml(task: Task, data_file: Path) -> str:
    """An lm-eval task file for one of our tasks (its data copied beside it as ``data_file``)."""
    if isinstance(task, LmEvalTask):
        return yaml.safe_dump(
            {k: str(v) if isinstance(v, FunctionRef) else v for k, v in task.spec.items()},
            allow_unicode=True,
            sort_keys=False,
        )
    output_type = {"perplexity": "loglikelihood_rolling"}.get(task.output_type, task.output_type)
    spec: dict[str, Any] = {
        "task": task.name,
        "dataset_path": "csv" if data_file.suffix == ".csv" else "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "output_type": output_type,
        # lm-eval's loglikelihood_rolling scores the target; the text is the question of the other types
        "doc_to_text": "" if task.output_type == "perplexity" else _jinja_template(task.doc_to_text),
        "num_fewshot": task.num_fewshot,
        "fewshot_delimiter": task.fewshot_delimiter,
        "target_delimiter": task.target_delimiter,
    }
    if task.output_type == "multiple_choice":
        choice = task.doc_to_choice
        spec["doc_to_choice"] = (
            [c for c in choice] if isinstance(choice, list) else "{{" + str(choice).strip("{}") + "}}"
        )
        spec["metric_list"] = [{"metric": "acc"}, {"metric": "acc_norm"}]
    if task.doc_to_target is not None:
        spec["doc_to_target"] = _jinja_template(task.doc_to_target)
    if task.output_type == "generate_until":
        spec["generation_kwargs"] = {"until": task.until, "max_gen_toks": task.max_tokens, "do_sample": False}
        options: dict[str, Any] = {"metric": "exact_match"}
        if task.ignore:
            options["regexes_to_ignore"] = task.ignore
        if task.ignore_case:
            options["ignore_case"] = True
        spec["metric_list"] = [options]
        if task.filter is not None:
            spec["filter_list"] = [
                {
                    "name": "extract",
                    "filter": [
                        {"function": "regex", "regex_pattern": task.filter.regex, "group_select": task.filter.select},
                        {"function": "take_first"},
                    ],
                }
            ]
    if task.output_type == "perplexity":
        spec["doc_to_target"] = _jinja_template(task.doc_to_text)
        spec["metric_list"] = [{"metric": m} for m in ("word_perplexity", "byte_perplexity", "bits_per_byte")]
    return yaml.safe_dump(spec, allow_unicode=True, sort_keys=False)
