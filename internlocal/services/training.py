"""Training actions: plan recipes, start a run (finetuning or pretraining), save now, stop, resume; prepare corpora."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from internlocal.i18n import _
from internlocal.services import Services

if TYPE_CHECKING:
    from internlocal.catalog.schema import Job, TrainRun
    from internlocal.train.plan import Plan
    from internlocal.train.recipe import Recipe


@dataclass
class RecipeRow:
    """A recipe file as the recipe lists show it: valid (with its plan) or not (with the reason)."""

    name: str
    recipe: Recipe | None
    plan: Plan | None
    command_or_error: str  # the launch command, or why the file is not a valid recipe


def recipe_rows(svc: Services, wanted=lambda recipe: True, *, measure_gpus: bool | None = None) -> list[RecipeRow]:
    """Every recipe ``wanted(recipe)`` accepts (invalid ones always), planned against this machine. GPU recipes
    are measured only where nvidia-smi answers cheaply (no CUDA context), unless ``measure_gpus`` says."""
    import shutil

    from internlocal.train.plan import plan_run
    from internlocal.train.recipe import list_recipes

    gpus_known = shutil.which("nvidia-smi") is not None if measure_gpus is None else measure_gpus
    rows = []
    for name, recipe, command in list_recipes():
        if recipe is None:
            rows.append(RecipeRow(name, None, None, command))
        elif wanted(recipe):
            plan = plan_run(svc.catalog, name, measure_free=not recipe.on_gpu or gpus_known)
            rows.append(RecipeRow(name, recipe, plan, command))
    return rows


def plan(svc: Services, recipe: str, overrides: dict[str, Any] | None = None, *, gpus: int | None = None) -> Plan:
    """The recipe resolved with ``overrides`` and ``gpus``, its estimate and whether it fits (``--dry-run``)."""
    from internlocal.train.plan import plan_run

    return plan_run(svc.catalog, recipe, overrides, gpus=gpus)


def start_training(
    svc: Services,
    recipe: str,
    overrides: dict[str, Any] | None = None,
    *,
    gpus: int | None = None,
    name: str | None = None,
) -> Job:
    """Plan, refuse what cannot run here (before anything loads), then submit the training job."""
    from internlocal.train.job import train
    from internlocal.train.plan import plan_run, refuse_if_too_big

    refuse_if_too_big(plan_run(svc.catalog, recipe, overrides, gpus=gpus))
    params = {"recipe": recipe, "overrides": overrides or {}, "name": name, "gpus": gpus}
    return svc.jobs.submit(train, params, kind="train.run", title=_("Train {recipe}").format(recipe=recipe))


def save_now(svc: Services, run: str | int) -> TrainRun:
    """Ask a running run to write a checkpoint at its next step."""
    from internlocal.train.control import touch_trigger

    row = svc.catalog.get_train_run(run)
    touch_trigger(row, "SAVE_NOW")
    return row


def stop(svc: Services, run: str | int) -> TrainRun:
    """Ask a running run to checkpoint and stop at its next step (resume continues it)."""
    from internlocal.train.control import touch_trigger

    row = svc.catalog.get_train_run(run)
    touch_trigger(row, "STOP")
    return row


def resume(svc: Services, run: str | int, *, gpus: int | None = None, settle_s: float = 60.0) -> Job:
    """Continue a stopped, failed or killed run from its newest checkpoint (on ``gpus`` processes when given)."""
    from internlocal.train.control import resume_run

    return resume_run(svc.jobs, svc.catalog, svc.catalog.get_train_run(run), settle_s=settle_s, gpus=gpus)


def prepare_corpus(
    svc: Services,
    source: str,
    model: str,
    seq_len: int,
    *,
    validation: float = 0.05,
    name: str | None = None,
    trust_remote_code: bool = False,
) -> Job:
    """Tokenize a corpus into shards for ``model``'s tokenizer, as a job."""
    from internlocal.train.job import prepare_corpus_job

    svc.catalog.get_model(model)  # a typo fails now, not in the job
    params = {
        "source": source,
        "model": model,
        "seq_len": seq_len,
        "validation": validation,
        "name": name,
        "trust_remote_code": trust_remote_code,
    }
    return svc.jobs.submit(
        prepare_corpus_job, params, kind="pretrain.prepare", title=_("Prepare {source}").format(source=source)
    )
