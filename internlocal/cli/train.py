"""``internlocal train``: recipes (list, show, run with key=value overrides, --dry-run), runs (resume, stop, save)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from internlocal.cli.common import print_json, services

app = typer.Typer(help="Finetune models from recipes (recipes/*.yaml).", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
Overrides = Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. lr=1e-4 lora.r=8")]
GpusOpt = Annotated[int | None, typer.Option("--gpus", help="Processes under torchrun: one per GPU.", min=1)]


def _gib(value: int | None) -> str:
    return f"{value / 2**30:.2f} GiB" if value is not None else "?"


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """Recipes with their memory estimate and whether it fits here."""
    print_recipes(lambda recipe: True, as_json)


def print_recipes(wanted, as_json: bool) -> None:
    """The recipes ``wanted(recipe)`` accepts (invalid ones always shown), with estimate and fit."""
    from internlocal.services.training import recipe_rows

    rows: list[dict[str, Any]] = []
    for row in recipe_rows(services(), wanted):
        if row.recipe is None or row.plan is None:
            rows.append({"recipe": row.name, "error": row.command_or_error})
            continue
        recipe, plan = row.recipe, row.plan
        rows.append(
            {
                "recipe": row.name,
                "method": recipe.method,
                "objective": recipe.objective,
                "init": recipe.init,
                "hardware": recipe.hardware,
                "gpus": recipe.gpus,
                "model": recipe.model,
                "estimate_bytes": plan.estimate.total if plan.estimate else None,
                "fits": plan.fits,
                "description": recipe.description,
                "command": row.command_or_error,
            }
        )
    if as_json:
        print_json(rows)
        return
    for item in rows:
        if "error" in item:
            typer.echo(f"{item['recipe']:34} invalid: {item['error']}")
            continue
        fit = {True: "fits", False: "too big", None: "?"}[item["fits"]]
        kind = item["method"] if item["method"] != "pretrain" else item["init"]
        kind += f" {item['objective']}" if item["objective"] != "sft" else ""
        typer.echo(
            f"{item['recipe']:34} {kind:10} {item['hardware']:9} ~{_gib(item['estimate_bytes']):>10} {fit:8} "
            f"{item['description']}"
        )


@app.command("show")
def show(recipe: str, overrides: Overrides = None, gpus: GpusOpt = None, as_json: JsonOpt = False) -> None:
    """The resolved recipe and its memory estimate (same as run --dry-run)."""
    from internlocal.train.recipe import parse_overrides

    _print_plan(recipe, parse_overrides(overrides or []), gpus, as_json)


def _print_plan(recipe: str, overrides: dict[str, Any], gpus: int | None, as_json: bool) -> None:
    import yaml

    from internlocal.services.training import plan

    planned = plan(services(), recipe, overrides, gpus=gpus)
    if as_json:
        print_json(planned.as_dict())
        return
    typer.echo(yaml.safe_dump(planned.recipe.model_dump(), sort_keys=False, allow_unicode=True).rstrip())
    if planned.estimate is not None:
        typer.echo(
            f"\nmemory estimate ({planned.device}), {planned.estimate.trainable_parameters:,} trainable parameters:"
        )
        typer.echo(planned.estimate.table())
    if planned.adaptation is not None:
        typer.echo(f"\n{planned.adaptation.describe()}")
    fit = {True: "fits", False: "does NOT fit", None: "unknown"}[planned.fits]
    typer.echo(f"free: {_gib(planned.available_bytes)} → {fit}")
    for note in planned.notes:
        typer.echo(f"note: {note}")


@app.command("run")
def run(
    recipe: str,
    overrides: Overrides = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the resolved recipe and memory estimate only.")
    ] = False,
    gpus: GpusOpt = None,
    name: Annotated[str | None, typer.Option("--name", help="Run name (default: recipe and time).")] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Train from a recipe as a job: the model is merged, exported to GGUF, quantized and registered at the end."""
    from internlocal.train.recipe import parse_overrides

    start(
        recipe, parse_overrides(overrides or []), gpus=gpus, name=name, dry_run=dry_run, detach=detach, as_json=as_json
    )


def start(
    recipe: str,
    overrides: dict[str, Any],
    *,
    gpus: int | None,
    name: str | None,
    dry_run: bool,
    detach: bool,
    as_json: bool,
) -> None:
    """``train run`` and ``pretrain run``: the dry run, or the run followed to its end."""
    from internlocal.cli.progress import follow_job
    from internlocal.services.training import start_training

    if dry_run:
        _print_plan(recipe, overrides, gpus, as_json)
        return
    svc = services()
    job = start_training(svc, recipe, overrides, gpus=gpus, name=name)
    report_run(follow_job(svc.jobs, job, detach=detach, as_json=as_json), as_json)


def report_run(job, as_json: bool) -> None:
    """What a finished training job made: final loss, peak memory against the estimate, the models."""
    if job is None or as_json:
        return
    result = job.result or {}
    typer.echo(
        f"run {result.get('run')}: final loss {result.get('final_loss')}, peak {_gib(result.get('peak_memory'))} "
        f"(estimated {_gib(result.get('estimated_peak'))})"
    )
    if result.get("held_out"):
        from internlocal.train.preference import held_out_line

        typer.echo(held_out_line(result["held_out"]))
    for key in ("merged_model", "gguf_model", "quantized_model"):
        if result.get(key):
            typer.echo(f"{key.replace('_', ' ')}: {result[key]}")
    print_run_notes(result)


def print_run_notes(summary: dict[str, Any]) -> None:
    """How the run adapted to the data, what replay mixed in, and the forgetting guard's before → after."""
    from internlocal.train.adapt import Adaptation
    from internlocal.train.guard import guard_lines

    if summary.get("adaptation"):
        typer.echo(Adaptation(**summary["adaptation"]).describe())
    if summary.get("replay"):
        r = summary["replay"]
        typer.echo(f"replay: {r['examples']} general examples answered by {r['answered_by']} (ratio {r['ratio']:g})")
    for line in guard_lines(summary.get("guard") or {}):
        typer.echo(line, err=line.startswith("warning:"))


@app.command("runs")
def runs(as_json: JsonOpt = False) -> None:
    """Training runs: status, final loss, the models they produced."""
    rows = services().catalog.list_train_runs()
    if as_json:
        print_json([r.model_dump() | {"summary": r.summary} for r in rows])
        return
    for r in rows:
        s = r.summary
        typer.echo(
            f"{r.id:>3} {r.name:44} {r.status:9} loss {s.get('final_loss', '-')}  "
            f"{s.get('quantized_model') or s.get('merged_model') or ''}"
        )


@app.command("stop")
def stop(run: str) -> None:
    """Checkpoint and stop a running run (resume continues it)."""
    from internlocal.services.training import stop as stop_run

    stop_run(services(), run)
    typer.echo(f"asked {run} to checkpoint and stop")


@app.command("save")
def save(run: str) -> None:
    """Write a checkpoint now, without stopping."""
    from internlocal.services.training import save_now

    save_now(services(), run)
    typer.echo(f"asked {run} to save a checkpoint")


@app.command("resume")
def resume(
    run: str,
    detach: Annotated[bool, typer.Option("--detach", "-d")] = False,
    gpus: Annotated[
        int | None, typer.Option("--gpus", help="Continue on this many processes (pretraining, FSDP).", min=1)
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Continue a stopped, failed or killed run from its newest checkpoint."""
    from internlocal.cli.progress import follow_job
    from internlocal.services.training import resume as resume_run

    svc = services()
    job = follow_job(svc.jobs, resume_run(svc, run, gpus=gpus), detach=detach, as_json=as_json)
    report_run(job, as_json)
