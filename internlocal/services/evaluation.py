"""Evaluation actions: start an evaluation of one or more models on tasks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from internlocal.errors import UserError
from internlocal.services import Services

if TYPE_CHECKING:
    from internlocal.catalog.schema import Job


def start_eval(svc: Services, models: list[str], tasks: list[str], *, limit: int | None = None) -> Job:
    """Check every model and task name now (a typo fails here, not in the job), then evaluate the models in turn
    as one resumable job (answers are cached)."""
    from internlocal.evals.job import run_eval
    from internlocal.evals.tasks import get_task

    models = [m.strip() for m in models if m.strip()]
    if not models:
        raise UserError("Name at least one model (`internlocal models list`).")
    if not tasks:
        raise UserError("Name at least one task (`internlocal eval tasks`).")
    for name in models:
        svc.catalog.get_model(name)
    for name in tasks:
        get_task(name, svc.settings.home)
    params = {"model": models[0] if len(models) == 1 else models, "tasks": tasks, "limit": limit}
    return svc.jobs.submit(run_eval, params, kind="eval.run", title=f"Eval {', '.join(models)} on {', '.join(tasks)}")
