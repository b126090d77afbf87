"""The leaderboard: tasks as rows, models as columns, group averages, exports.

Scores sit side by side only when they were made the same way: one row per task *variant*
(task version, prompt hash and item limit). A model's latest run of a variant fills its cell;
when a task was run in several variants, each variant is its own row, labelled with what differs.
Group averages (per task group and metric, over two or more rows) are given only for models that
have a score on every row of the group, so an average never hides a missing task. A run made with
CircularEval adds a ``circular_acc`` row beside the task's plain one; a task with subjects (MMLU, C-Eval,
CMMLU) carries per-category and per-subject scores that a row expands into.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from internlocal.catalog.schema import EvalRun

NO_GROUP = "other"


@dataclass
class Score:
    run: int
    value: float
    stderr: float | None
    items: int
    skipped: int


@dataclass
class Row:
    task: str
    group: str
    metric: str
    version: str
    prompt_hash: str
    limit: int | None
    label: str = ""
    scores: dict[str, Score] = field(default_factory=dict)
    breakdown: dict[str, dict[str, Any]] = field(default_factory=dict)  # model → {"subjects"/"categories": …}

    @property
    def variant(self) -> tuple[str, str, int | None]:
        return (self.version, self.prompt_hash, self.limit)

    def details(self) -> list[tuple[str, dict[str, float | None]]]:
        """(label, {model: score of the row's metric}) per category, then per subject; [] without subjects."""
        out = []
        for kind, prefix in (("categories", "category"), ("subjects", "subject")):
            names = sorted({name for b in self.breakdown.values() for name in b.get(kind, {})})
            for name in names:
                values = {m: b.get(kind, {}).get(name, {}).get(self.metric) for m, b in self.breakdown.items()}
                out.append((f"{prefix}: {name}", values))
        return out


@dataclass
class GroupAverage:
    group: str
    metric: str
    limit: int | None
    rows: int
    values: dict[str, float | None]  # None: the model lacks a score on one of the group's rows


@dataclass
class Leaderboard:
    models: list[str]
    rows: list[Row]
    groups: list[GroupAverage]
    lineage: dict[str, str] = field(default_factory=dict)  # model → what it was trained from ("finetune of X")

    # -- exports -----------------------------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        return {
            "models": self.models,
            "rows": [
                {
                    "task": r.task,
                    "label": r.label,
                    "group": r.group,
                    "metric": r.metric,
                    "version": r.version,
                    "prompt_hash": r.prompt_hash,
                    "limit": r.limit,
                    "scores": {m: vars(s) for m, s in r.scores.items()},
                    "details": [{"label": label, "values": values} for label, values in r.details()],
                }
                for r in self.rows
            ],
            "groups": [
                {
                    "group": g.group,
                    "label": group_label(g),
                    "metric": g.metric,
                    "limit": g.limit,
                    "rows": g.rows,
                    "values": g.values,
                }
                for g in self.groups
            ],
            "lineage": self.lineage,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, ensure_ascii=False)

    def to_markdown(self, expand: bool = False) -> str:
        lines = ["| task | metric | " + " | ".join(self.models) + " |", "|---|---|" + "---|" * len(self.models)]
        for r in self.rows:
            lines.append(
                f"| {r.label} | {r.metric} | " + " | ".join(format_score(r.scores.get(m)) for m in self.models) + " |"
            )
            for label, values in r.details() if expand else []:
                lines.append(
                    f"| &nbsp;&nbsp;{label} | {r.metric} | "
                    + " | ".join(format_value(values.get(m)) for m in self.models)
                    + " |"
                )
        for g in self.groups:
            lines.append(
                f"| **{group_label(g)}** | {g.metric} | "
                + " | ".join(format_value(g.values[m]) for m in self.models)
                + " |"
            )
        lines += ["", *(f"- {m}: {origin}" for m, origin in self.lineage.items())] if self.lineage else []
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(
            [
                "task",
                "model",
                "metric",
                "value",
                "stderr",
                "items",
                "skipped",
                "task_version",
                "prompt_hash",
                "limit",
                "group",
                "run",
            ]
        )
        for r in self.rows:
            for m, s in r.scores.items():
                writer.writerow(
                    [
                        r.label,
                        m,
                        r.metric,
                        s.value,
                        s.stderr,
                        s.items,
                        s.skipped,
                        r.version,
                        r.prompt_hash,
                        r.limit if r.limit is not None else "",
                        r.group,
                        s.run,
                    ]
                )
            for label, values in r.details():
                for m, value in values.items():
                    if value is not None:
                        writer.writerow(
                            [f"{r.label} / {label}", m, r.metric, value, "", "", "", "", "", "", r.group, ""]
                        )
        for g in self.groups:
            for m, value in g.values.items():
                if value is not None:
                    writer.writerow([group_label(g), m, g.metric, value, "", "", "", "", "", "", g.group, ""])
        return out.getvalue()

    def to_text(self, width: int = 26, expand: bool = False) -> str:
        labels = [r.label for r in self.rows] + [group_label(g) for g in self.groups]
        labels += [f"  {label}" for r in self.rows for label, _ in (r.details() if expand else [])]
        first = max([len("task"), *map(len, labels)]) + 2
        lines = ["task".ljust(first) + "metric".ljust(18) + "".join(m[:width].ljust(width + 2) for m in self.models)]
        for r in self.rows:
            lines.append(
                r.label.ljust(first)
                + r.metric[:16].ljust(18)
                + "".join(format_score(r.scores.get(m), "-").ljust(width + 2) for m in self.models)
            )
            for label, values in r.details() if expand else []:
                lines.append(
                    f"  {label}".ljust(first)
                    + r.metric[:16].ljust(18)
                    + "".join(format_value(values.get(m), "-").ljust(width + 2) for m in self.models)
                )
        for g in self.groups:
            lines.append(
                group_label(g).ljust(first)
                + g.metric[:16].ljust(18)
                + "".join(format_value(g.values[m], "-").ljust(width + 2) for m in self.models)
            )
        lines += [f"{m}: {origin}" for m, origin in self.lineage.items()]
        return "\n".join(lines)


def group_label(g: GroupAverage) -> str:
    return f"{g.group} average ({g.rows} tasks{f', first {g.limit} items' if g.limit is not None else ''})"


def format_value(value: float | None, missing: str = "") -> str:
    return missing if value is None else f"{value:.4f}"


def format_score(score: Score | None, missing: str = "") -> str:
    if score is None:
        return missing
    err = f" ± {score.stderr:.3f}" if score.stderr is not None and not math.isnan(score.stderr) else ""
    return f"{score.value:.4f}{err}"


def build(runs: Iterable[EvalRun], task_groups: dict[str, str | None] | None = None) -> Leaderboard:
    """The leaderboard of these runs (oldest first; a later run of the same variant replaces an earlier one).

    ``task_groups`` names the group of tasks whose runs did not record one (runs made before the
    group was stored with them).
    """
    task_groups = task_groups or {}
    rows: dict[tuple, Row] = {}
    for run in runs:
        metrics = run.metrics
        if not metrics:
            continue
        config = json.loads(run.config_json or "{}")
        group = config.get("group") or task_groups.get(run.task) or NO_GROUP
        shown = [next(iter(metrics))]  # a task's primary metric comes first
        if "circular_acc" in metrics:
            shown.append("circular_acc")
        for metric in shown:
            key = (run.task, metric, run.task_version, run.prompt_hash, config.get("limit"))
            row = rows.get(key)
            if row is None:
                row = rows[key] = Row(run.task, group, metric, run.task_version, run.prompt_hash, config.get("limit"))
            err = run.stderr.get(metric)
            row.scores[run.model_name] = Score(
                run.id or 0, float(metrics[metric]), None if err is None else float(err), run.n_items, run.n_skipped
            )
            if config.get("breakdown"):
                row.breakdown[run.model_name] = config["breakdown"]
            else:
                row.breakdown.pop(run.model_name, None)
    # newest variant first within a task; a task's plain score before its circular one
    ordered = sorted(
        rows.values(),
        key=lambda r: (r.group, r.task, -max(s.run for s in r.scores.values()), r.metric == "circular_acc"),
    )
    _label(ordered)
    models = sorted({m for r in ordered for m in r.scores})
    return Leaderboard(models, ordered, _group_averages(ordered, models))


def build_from_catalog(catalog, home: Path | None = None, task: str | None = None) -> Leaderboard:
    from internlocal.errors import UserError
    from internlocal.evals.tasks import all_tasks

    try:
        groups = {name: t.group for name, t in all_tasks(home).items()}
    except UserError:  # a broken task file elsewhere must not hide the scores
        groups = {}
    board = build(catalog.eval_runs(task=task), groups)
    board.lineage = {m: origin for m in board.models if (origin := trained_from(catalog, m))}
    return board


TRAINING_OPERATIONS = ("finetune", "pretrain.continued")


def trained_from(catalog, model: str) -> str | None:
    """ "finetune of BASE" for a model a run made (through its GGUF conversion and quantization), else None."""
    row = catalog.find_model(model)
    for _ in range(8):  # conversions and quantizations between the trained model and this file
        if row is None or row.id is None:
            return None
        edges = [e for e in catalog.parents(("model", row.id)) if e.parent_type == "model"]
        if not edges:
            return None
        parent = catalog.find_model(edges[0].parent_id)
        if parent is not None and edges[0].operation in TRAINING_OPERATIONS:
            return f"{edges[0].operation} of {_converted_from(catalog, parent).name}"
        row = parent
    return None


def _converted_from(catalog, model):
    """The model a training run's base was converted from (a GGUF the user chats with → its HF folder), or itself."""
    assert model.id is not None
    for edge in catalog.parents(("model", model.id)):
        if edge.operation == "convert.gguf_to_hf" and edge.parent_type == "model":
            return catalog.find_model(edge.parent_id) or model
    return model


def _label(rows: list[Row]) -> None:
    """A task's name, plus what tells its variants apart; a smoke run always says it was one."""
    by_task: dict[str, list[Row]] = {}
    for r in rows:
        by_task.setdefault(r.task, []).append(r)
    for task, variants in by_task.items():
        versions = {r.version for r in variants}
        prompts = {(r.version, r.prompt_hash) for r in variants}
        limited = any(r.limit is not None for r in variants)
        for r in variants:
            parts = []
            if len(versions) > 1:
                parts.append(f"v{r.version}")
            if len(prompts) > len(versions):
                parts.append(f"prompt {r.prompt_hash[:6]}")
            if r.limit is not None:
                parts.append(f"first {r.limit}")
            elif limited:
                parts.append("all items")
            r.label = f"{task} [{', '.join(parts)}]" if parts else task


def _group_averages(rows: list[Row], models: list[str]) -> list[GroupAverage]:
    """Averages over the tasks of a group that share a metric and an item limit; of a task run in
    several variants only the newest counts (rows come newest first within a task)."""
    by_group: dict[tuple[str, str, int | None], dict[str, Row]] = {}
    for r in rows:
        by_group.setdefault((r.group, r.metric, r.limit), {}).setdefault(r.task, r)
    averages = []
    for (group, metric, limit), members in by_group.items():
        if len(members) < 2:
            continue
        values: dict[str, float | None] = {}
        for m in models:
            scores = [r.scores[m].value for r in members.values() if m in r.scores]
            values[m] = sum(scores) / len(scores) if len(scores) == len(members) else None
        averages.append(GroupAverage(group, metric, limit, len(members), values))
    return averages
