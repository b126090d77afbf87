"""Controlling a run from outside (CLI, TUI): save now, stop, resume.

The loop watches its run folder for ``SAVE_NOW`` and ``STOP``; a resume restarts the run's job,
which continues from the newest complete checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path

from internlocal.catalog.catalog import Catalog
from internlocal.catalog.schema import Job, TrainRun
from internlocal.errors import UserError
from internlocal.i18n import _
from internlocal.jobs.runner import JobRunner
from internlocal.train.plan import free_memory
from internlocal.train.run_config import RunConfig


def touch_trigger(run: TrainRun, trigger: str) -> Path:
    """``SAVE_NOW`` or ``STOP`` in the run's folder; the loop acts on it at its next step."""
    if run.status not in ("running", "created"):
        raise UserError(
            _("Run {name} is {status}; only a running run can be asked to save or stop.").format(
                name=run.name, status=run.status
            )
        )
    path = Path(run.run_dir) / trigger
    path.touch()
    return path


def resume_run(
    jobs: JobRunner, catalog: Catalog, run: TrainRun, settle_s: float = 60.0, gpus: int | None = None
) -> Job:
    """Resume ``run``'s job from its newest checkpoint, on ``gpus`` processes when given (pretraining and FSDP
    checkpoints reshard; the number goes to the job as a launch parameter, the run's saved recipe stays as it
    was). A run reads ``stopped`` a moment before its job has wound down (the job records the run first, then
    ends), so a resume right after a stop waits for that."""
    if run.job_id is None:
        raise UserError(_("Run {name} has no job to resume.").format(name=run.name))
    if run.status == "finished":
        raise UserError(_("Run {name} has finished; nothing to resume.").format(name=run.name))
    params = None
    if gpus is not None:
        recipe = RunConfig.model_validate(run.config).recipe
        if gpus != recipe.gpus and recipe.method != "pretrain" and recipe.distributed != "fsdp":
            raise UserError(
                _(
                    "Run {name}'s checkpoints hold one full copy per run ({distributed}); "
                    "only pretraining and FSDP runs resume on another number of GPUs."
                ).format(name=run.name, distributed=recipe.distributed)
            )
        if recipe.on_gpu:
            __, visible = free_memory("cuda")
            if gpus > (visible or 0):
                raise UserError(
                    _("Run {name} cannot resume on {gpus} GPUs: {visible} CUDA GPU(s) are visible.").format(
                        name=run.name, gpus=gpus, visible=visible or 0
                    )
                )
        params = {"gpus": gpus}
    deadline = time.monotonic() + settle_s
    while True:
        job = jobs.refresh_one(catalog.get_job(run.job_id))
        if job.status not in ("queued", "running"):
            return jobs.resume(run.job_id, params=params)
        if run.status != "stopped" or time.monotonic() > deadline:
            raise UserError(
                _("Run {name} is still running (job {job_id}); stop it first.").format(name=run.name, job_id=run.job_id)
            )
        time.sleep(0.1)
