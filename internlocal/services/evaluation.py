"""Evaluation actions: start an evaluation of one or more models on tasks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from internlocal.errors import UserError
from internlocal.i18n import _
from internlocal.services import Services

if TYPE_CHECKING:
    from internlocal.catalog.schema import Job
    from internlocal.evals.tasks import Task

# a guess for a model this machine has not evaluated yet: seconds per item per billion parameters (a scored
# item on a laptop CPU through llama.cpp); generating an answer costs several scorings
GUESS_S_PER_ITEM_PER_B = 0.3
GUESS_MIN_S_PER_ITEM = 0.02
GENERATION_FACTOR = 4.0


@dataclass
class EvalEstimate:
    items: int  # every (model, item) pair the run would answer
    seconds: float
    measured: bool  # from this machine's earlier evaluations of every chosen model, not a guess from their size

    def describe(self) -> str:
        from internlocal.formatting import rough_duration

        basis = _("measured here") if self.measured else _("guessed from the model's size")
        return _("{items} items, {duration} ({basis})").format(
            items=self.items, duration=rough_duration(self.seconds), basis=basis
        )


def _seconds_per_item(svc: Services, model: str) -> float | None:
    """Seconds per item of the newest finished evaluation job that evaluated only ``model``."""
    for job_id in sorted({run.job_id for run in svc.catalog.eval_runs(model=model) if run.job_id}, reverse=True):
        job = svc.catalog.get_job(job_id)
        runs = svc.catalog.eval_runs(job_id=job_id)
        items = sum(run.n_items for run in runs)
        if job.started_at and job.finished_at and items and all(run.model_name == model for run in runs):
            elapsed = datetime.fromisoformat(job.finished_at) - datetime.fromisoformat(job.started_at)
            return elapsed.total_seconds() / items
    return None


def estimate_eval(
    svc: Services, models: list[str], tasks: list[Task], *, limit: int | None = None, circular: bool = False
) -> EvalEstimate:
    """How many items ``models`` × ``tasks`` is and about how long it takes here, before anything runs; under
    CircularEval a multiple-choice question is asked once per option (its first row's count)."""
    total_items, seconds, measured = 0, 0.0, True
    for name in models:
        per_item = _seconds_per_item(svc, name)
        guessed = per_item is None
        if per_item is None:
            measured = False
            parameters = svc.catalog.get_model(name).parameters or 1e9
            per_item = max(GUESS_MIN_S_PER_ITEM, GUESS_S_PER_ITEM_PER_B * parameters / 1e9)
        for task in tasks:
            items = len(task.docs) if limit is None else min(limit, len(task.docs))
            factor = GENERATION_FACTOR if guessed and task.output_type == "generate_until" else 1.0
            if circular and task.output_type == "multiple_choice" and task.docs:
                factor *= len(task.choices(task.docs[0]))
            total_items += items
            seconds += items * per_item * factor
    return EvalEstimate(total_items, seconds, measured and bool(models))


def start_eval(
    svc: Services,
    models: list[str],
    tasks: list[str],
    *,
    limit: int | None = None,
    circular: bool = False,
    include_paths: list[str] | None = None,
    trusted: list[str] | None = None,
) -> Job:
    """Check every model and task name now (a typo, an unsupported lm-eval setting, untrusted code or a task
    CircularEval cannot rotate fails here, not in the job), then evaluate the models in turn as one resumable job
    (answers are cached). ``include_paths`` are searched for lm-eval task names; ``trusted`` folders may run the
    ``!function`` code of their task files."""
    from pathlib import Path

    from internlocal.evals.job import resolve_tasks, run_eval

    models = [m.strip() for m in models if m.strip()]
    if not models:
        raise UserError(_("Name at least one model (`internlocal models list`)."))
    if not tasks:
        raise UserError(_("Name at least one task (`internlocal eval tasks`)."))
    for name in models:
        svc.catalog.get_model(name)
    include_paths = [str(Path(p).resolve()) for p in include_paths or []]
    trusted = [str(Path(p).resolve()) for p in trusted or []]
    for path in include_paths:
        if not Path(path).is_dir():
            raise UserError(_("--include-path {path} is not a folder.").format(path=path))
    for task in resolve_tasks(tasks, svc.settings.home, include_paths, trusted):
        if circular:
            if task.output_type != "multiple_choice":
                raise UserError(
                    _("CircularEval is for lettered multiple choice; task {name} is {kind}.").format(
                        name=task.name, kind=task.output_type
                    )
                )
            for doc in task.docs[:1]:  # a task without rows was refused when its file was read
                task.option_fields(doc)
    params: dict = {"model": models[0] if len(models) == 1 else models, "tasks": tasks, "limit": limit}
    # only what differs from the defaults, so a job's parameters read as the user asked
    params.update(
        {k: v for k, v in (("circular", circular), ("include_paths", include_paths), ("trusted", trusted)) if v}
    )
    return svc.jobs.submit(
        run_eval,
        params,
        kind="eval.run",
        title=_("Eval {models} on {tasks}").format(models=", ".join(models), tasks=", ".join(tasks)),
    )
