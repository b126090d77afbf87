"""The training job: plan → inputs ready → training process → export, for finetuning and pretraining alike.

The training itself runs in its own process (``python -m internlocal.train.loop RUN_DIR``, or
``torchrun`` for several GPUs, see ``process.py``); this job prepares the run (``plan.py``,
``inputs.py``), writes its ``config.json`` (``run_config.py``), follows it, and after a finished
run exports its model (``export.py``). A resumed job continues its run from the newest checkpoint,
and skips the export stages it has already done.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from internlocal.catalog.catalog import Catalog
from internlocal.catalog.schema import TrainRun
from internlocal.data.library import import_corpus
from internlocal.errors import UserError
from internlocal.jobs.context import JobCancelled, JobContext
from internlocal.jobs.locks import exclusive
from internlocal.train.export import export_run
from internlocal.train.guard import run_guard
from internlocal.train.inputs import corpus_source, hf_base, training_data
from internlocal.train.plan import plan_run, refuse_if_too_big
from internlocal.train.process import run_training_process
from internlocal.train.replay import base_answers, mix_replay, replay_prompts
from internlocal.train.run_config import RunConfig


def train(
    ctx: JobContext,
    recipe: str,
    overrides: dict[str, Any] | None = None,
    name: str | None = None,
    gpus: int | None = None,
) -> dict[str, Any]:
    """Train ``recipe`` with ``overrides`` on ``gpus`` processes (default: the recipe's ``gpus``). A resumed job
    is called with the parameters it was submitted with (``gpus`` replaced when the resume names one)."""
    catalog = ctx.catalog
    held = contextlib.ExitStack()
    try:
        run_id = ctx.state.get("run_id")
        if run_id is None:
            run, config = _new_run(ctx, recipe, overrides, name, gpus)
            resume = False
        else:
            run = catalog.get_train_run(run_id)
            config = RunConfig.model_validate(run.config)  # also a config saved before RunConfig: the whole recipe
            resume = True
        # one job at a time per run directory: a second (a resume racing a stop that winds down) waits for the first
        held.enter_context(exclusive(Path(run.run_dir) / "job.lock", f"training run {run.name}", wait=True, ctx=ctx))
        if resume:
            catalog.update_train_run(run.id, job_id=ctx.job_id)
        assert run.id is not None
        if ctx.state.get("stage", "train") == "train":
            processes = gpus if gpus is not None else config.recipe.gpus
            result = run_training_process(ctx, run, Path(run.run_dir), config.recipe, processes, resume)
            if result["status"] != "finished":
                catalog.update_train_run(run.id, status="stopped", summary_json=json.dumps(result))
                raise JobCancelled()
            ctx.save_state({**ctx.state, "stage": "export", "result": result})
        result = ctx.state["result"]
        outputs = export_run(ctx, run, config)
        if "guard" not in ctx.state:
            chatted = outputs.get("quantized_model") or outputs.get("gguf_model") or outputs.get("merged_model")
            try:
                guard = run_guard(ctx, config.recipe, chatted)
            except JobCancelled:
                raise
            except Exception as exc:  # the model is registered already: say what could not be measured, and go on
                guard = {"enabled": False, "note": f"could not measure: {exc}"}
                ctx.log(f"forgetting guard: {guard['note']}", level="warning")
            ctx.save_state({**ctx.state, "guard": guard})
        summary = {
            **result,
            **outputs,
            "estimated_peak": (config.estimate or {}).get("total_bytes"),
            "guard": ctx.state["guard"],
            **({"adaptation": config.adaptation} if config.adaptation else {}),
            **({"replay": config.replay} if config.replay else {}),
        }
        catalog.update_train_run(run.id, status="finished", summary_json=json.dumps(summary))
        return {"run": run.name, **summary}
    except UserError as exc:
        run_id = ctx.state.get("run_id")
        if run_id is not None:
            catalog.update_train_run(run_id, status="failed", summary_json=json.dumps({"error": str(exc)}))
        raise
    finally:
        held.close()


def _new_run(
    ctx: JobContext, recipe: str, overrides: dict[str, Any] | None, name: str | None, gpus: int | None
) -> tuple[TrainRun, RunConfig]:
    """Plan (pulling the base first when it is not in the catalog), refuse what does not fit, get the inputs
    ready, write ``runs/<name>/config.json`` and record the run."""
    catalog, settings = ctx.catalog, ctx.settings
    plan = plan_run(catalog, recipe, overrides, gpus=gpus)
    base = plan.base
    if base is None:
        from internlocal.hub.pull import pull_model

        ctx.log(f"pulling {plan.recipe.model}")
        base = catalog.get_model(pull_model(ctx, plan.recipe.model)["model"])
        plan = plan_run(catalog, recipe, overrides, gpus=gpus)
    refuse_if_too_big(plan)
    r = plan.recipe
    if r.guard.enabled:
        from internlocal.evals.tasks import get_task

        for task in r.guard.tasks:  # a misspelt guard task is refused now, not after hours of training
            get_task(task, settings.home)
    replaying = r.method != "pretrain" and r.replay.ratio > 0
    if replaying:  # the base answers the replay prompts before the run exists: a failure here leaves nothing behind
        base_answers(ctx, base, replay_prompts(r)[1], r.replay.max_tokens)
    base_hf = hf_base(ctx, base)
    dataset = training_data(ctx, r, base_hf)
    run_name = name or _run_name(catalog, plan.name)
    run_dir = settings.home / "runs" / run_name
    run_dir.mkdir(parents=True, exist_ok=False)
    if plan.adaptation is not None:
        ctx.log(plan.adaptation.describe())
    train_file, replay = Path(dataset.path) / "train.jsonl", None
    if replaying:
        train_file, replay = mix_replay(ctx, r, base, train_file, run_dir)  # the answers come from the cache now
    config = RunConfig(
        recipe=r,
        recipe_name=plan.name,
        model_path=str(Path(base_hf.path).resolve()),
        base_model=base_hf.name,
        dataset=dataset.name,
        train_file=str(train_file),
        validation_file=str(Path(dataset.path) / "validation.jsonl"),
        corpus_dir=dataset.path if r.method == "pretrain" else None,
        threads=settings.threads,
        estimate=plan.estimate.as_dict() if plan.estimate else None,
        adaptation=plan.adaptation.as_dict() if plan.adaptation else None,
        replay=replay,
    )
    config.save(run_dir)
    run = catalog.add_train_run(
        TrainRun(
            name=run_name,
            recipe=plan.name,
            config_json=json.dumps(config.as_json()),
            base_model=base_hf.name,
            dataset=dataset.name,
            run_dir=str(run_dir),
            job_id=ctx.job_id,
            status="created",
            estimate_json=json.dumps(config.estimate or {}),
        )
    )
    ctx.save_state({"run_id": run.id, "stage": "train"})
    return run, config


def _run_name(catalog: Catalog, recipe_name: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{recipe_name}-{stamp}"
    n = 2
    existing = {r.name for r in catalog.list_train_runs()}
    while name in existing:
        name, n = f"{recipe_name}-{stamp}-{n}", n + 1
    return name


def prepare_corpus_job(
    ctx: JobContext,
    source: str,
    model: str,
    seq_len: int,
    validation: float,
    name: str | None,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """``pretrain prepare`` as a job: progress in documents, cancellable, resumable (written shards stay)."""
    dataset = import_corpus(
        ctx,
        corpus_source(source),
        hf_base(ctx, ctx.catalog.get_model(model)),
        seq_len,
        validation,
        name,
        trust_remote_code,
    )
    return {"dataset": dataset.name, "path": dataset.path, **dataset.stats}
