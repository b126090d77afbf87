"""``internlocal train``: recipes (list, show, run with key=value overrides, --dry-run) and runs (resume, stop, save)."""

from __future__ import annotations

from typing import Annotated

import typer

from internlocal.cli.common import print_json, services

app = typer.Typer(help="Finetune models from recipes (recipes/*.yaml).", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _gib(value: int | None) -> str:
    return f"{value / 2**30:.2f} GiB" if value is not None else "?"


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """Recipes with their memory estimate and whether it fits here."""
    print_recipes(lambda recipe: True, as_json)


def print_recipes(wanted, as_json: bool) -> None:
    """The recipes ``wanted(recipe)`` accepts (invalid ones always shown), with estimate and fit."""
    import shutil

    from internlocal.train.job import plan_run
    from internlocal.train.recipe import list_recipes

    svc = services()
    rows = []
    # a GPU's free memory is asked of nvidia-smi only (cheap, no CUDA context); without it GPU recipes show "?"
    gpu_known = shutil.which("nvidia-smi") is not None
    for name, recipe, command in list_recipes():
        if recipe is None:
            rows.append({"recipe": name, "error": command})
            continue
        if not wanted(recipe):
            continue
        plan = plan_run(svc.settings, svc.catalog, name, measure_free=recipe.hardware == "cpu" or gpu_known)
        rows.append(
            {
                "recipe": name,
                "method": recipe.method,
                "init": recipe.init,
                "hardware": recipe.hardware,
                "gpus": recipe.gpus,
                "model": recipe.model,
                "estimate_bytes": plan.estimate.total if plan.estimate else None,
                "fits": plan.fits,
                "description": recipe.description,
                "command": command,
            }
        )
    if as_json:
        print_json(rows)
        return
    for row in rows:
        if "error" in row:
            typer.echo(f"{row['recipe']:34} invalid: {row['error']}")
            continue
        fit = {True: "fits", False: "too big", None: "?"}[row["fits"]]
        kind = row["method"] if row["method"] != "pretrain" else row["init"]
        typer.echo(
            f"{row['recipe']:34} {kind:10} {row['hardware']:9} ~{_gib(row['estimate_bytes']):>10} {fit:8} "
            f"{row['description']}"
        )


@app.command("show")
def show(
    recipe: str,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The resolved recipe and its memory estimate (same as run --dry-run)."""
    _dry_run(recipe, overrides or [], as_json)


def _dry_run(recipe: str, overrides: list[str], as_json: bool) -> None:
    import yaml

    from internlocal.train.job import plan_run
    from internlocal.train.recipe import parse_overrides

    svc = services()
    plan = plan_run(svc.settings, svc.catalog, recipe, parse_overrides(overrides))
    if as_json:
        print_json(plan.as_dict())
        return
    typer.echo(yaml.safe_dump(plan.recipe.model_dump(), sort_keys=False, allow_unicode=True).rstrip())
    if plan.estimate is not None:
        typer.echo(f"\nmemory estimate ({plan.device}), {plan.estimate.trainable_parameters:,} trainable parameters:")
        typer.echo(plan.estimate.table())
    fit = {True: "fits", False: "does NOT fit", None: "unknown"}[plan.fits]
    typer.echo(f"free: {_gib(plan.available_bytes)} → {fit}")
    for note in plan.notes:
        typer.echo(f"note: {note}")


@app.command("run")
def run(
    recipe: str,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. lr=1e-4 lora.r=8")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the resolved recipe and memory estimate only.")
    ] = False,
    gpus: Annotated[int | None, typer.Option("--gpus", help="Processes under torchrun (multi-gpu recipes).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Run name (default: recipe and time).")] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Train from a recipe as a job: the model is merged, exported to GGUF, quantized and registered at the end."""
    from internlocal.cli.progress import follow_job
    from internlocal.train.job import plan_run, refuse_if_too_big, train
    from internlocal.train.recipe import parse_overrides

    items = list(overrides or [])
    if gpus is not None:
        items.append(f"gpus={gpus}")
    if dry_run:
        _dry_run(recipe, items, as_json)
        return
    svc = services()
    parsed = parse_overrides(items)
    refuse_if_too_big(plan_run(svc.settings, svc.catalog, recipe, parsed))  # refused before anything loads
    job = follow_job(
        svc.jobs,
        svc.jobs.submit(
            train, {"recipe": recipe, "overrides": parsed, "name": name}, kind="train.run", title=f"Train {recipe}"
        ),
        detach=detach,
        as_json=as_json,
    )
    if job is not None and not as_json:
        result = job.result or {}
        typer.echo(
            f"run {result.get('run')}: final loss {result.get('final_loss')}, peak {_gib(result.get('peak_memory'))} "
            f"(estimated {_gib(result.get('estimated_peak'))})"
        )
        for key in ("merged_model", "gguf_model", "quantized_model"):
            if result.get(key):
                typer.echo(f"{key.replace('_', ' ')}: {result[key]}")


@app.command("runs")
def runs(as_json: JsonOpt = False) -> None:
    """Training runs: status, final loss, the models they produced."""
    svc = services()
    rows = svc.catalog.list_train_runs()
    if as_json:
        print_json([r.model_dump() | {"summary": r.summary} for r in rows])
        return
    for r in rows:
        s = r.summary
        typer.echo(
            f"{r.id:>3} {r.name:44} {r.status:9} loss {s.get('final_loss', '-')}  "
            f"{s.get('quantized_model') or s.get('merged_model') or ''}"
        )


def _run(ref: str):
    return services().catalog.get_train_run(ref)


@app.command("stop")
def stop(run: str) -> None:
    """Checkpoint and stop a running run (resume continues it)."""
    from internlocal.train.job import touch_trigger

    touch_trigger(_run(run), "STOP")
    typer.echo(f"asked {run} to checkpoint and stop")


@app.command("save")
def save(run: str) -> None:
    """Write a checkpoint now, without stopping."""
    from internlocal.train.job import touch_trigger

    touch_trigger(_run(run), "SAVE_NOW")
    typer.echo(f"asked {run} to save a checkpoint")


@app.command("resume")
def resume(
    run: str,
    detach: Annotated[bool, typer.Option("--detach", "-d")] = False,
    gpus: Annotated[
        int | None, typer.Option("--gpus", help="Continue on this many processes (pretraining, FSDP).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Continue a stopped, failed or killed run from its newest checkpoint."""
    from internlocal.cli.progress import follow_job
    from internlocal.train.job import resume_run

    svc = services()
    row = _run(run)
    job = follow_job(svc.jobs, resume_run(svc.jobs, svc.catalog, row, gpus=gpus), detach=detach, as_json=as_json)
    if job is not None and not as_json:
        typer.echo(f"run {row.name} finished: {job.result}")
