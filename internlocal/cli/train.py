"""``internlocal train``: recipes (list, show, run with key=value overrides, --dry-run), runs (resume, stop, save)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from internlocal.cli.common import pad, print_json, services
from internlocal.i18n import N_, _, label

app = typer.Typer(help=_("Finetune models from recipes (recipes/*.yaml)."), no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help=_("Machine-readable output."))]
Overrides = Annotated[list[str] | None, typer.Argument(help=_("key=value overrides, e.g. lr=1e-4 lora.r=8"))]
GpusOpt = Annotated[int | None, typer.Option("--gpus", help=_("Processes under torchrun: one per GPU."), min=1)]

# a training run's stored status, translated where it is shown
STATUS_LABELS = {
    "created": N_("created"),
    "running": N_("running"),
    "stopped": N_("stopped"),
    "finished": N_("finished"),
    "failed": N_("failed"),
}


def _gib(value: int | None) -> str:
    return f"{value / 2**30:.2f} GiB" if value is not None else "?"


@app.command("list", help=_("Recipes with their memory estimate and whether it fits here."))
def list_(as_json: JsonOpt = False) -> None:
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
            typer.echo(f"{item['recipe']:34} " + _("invalid: {error}").format(error=item["error"]))
            continue
        fit = {True: _("fits"), False: _("too big"), None: "?"}[item["fits"]]
        kind = item["method"] if item["method"] != "pretrain" else item["init"]
        kind += f" {item['objective']}" if item["objective"] != "sft" else ""
        typer.echo(
            f"{item['recipe']:34} {kind:10} {item['hardware']:9} ~{_gib(item['estimate_bytes']):>10} {pad(fit, 8)} "
            f"{item['description']}"
        )


@app.command("show", help=_("The resolved recipe and its memory estimate (same as run --dry-run)."))
def show(recipe: str, overrides: Overrides = None, gpus: GpusOpt = None, as_json: JsonOpt = False) -> None:
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
            "\n"
            + _("memory estimate ({device}), {parameters:,} trainable parameters:").format(
                device=planned.device, parameters=planned.estimate.trainable_parameters
            )
        )
        typer.echo(planned.estimate.table())
    if planned.adaptation is not None:
        typer.echo(f"\n{planned.adaptation.describe()}")
    fit = {True: _("fits"), False: _("does NOT fit"), None: _("unknown")}[planned.fits]
    typer.echo(_("free: {free} → {fit}").format(free=_gib(planned.available_bytes), fit=fit))
    for note in planned.notes:
        typer.echo(_("note: {note}").format(note=note))


@app.command(
    "run",
    help=_("Train from a recipe as a job: the model is merged, exported to GGUF, quantized and registered at the end."),
)
def run(
    recipe: str,
    overrides: Overrides = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help=_("Print the resolved recipe and memory estimate only."))
    ] = False,
    gpus: GpusOpt = None,
    name: Annotated[str | None, typer.Option("--name", help=_("Run name (default: recipe and time)."))] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d")] = False,
    as_json: JsonOpt = False,
) -> None:
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
        _("run {run}: final loss {loss}, peak {peak} (estimated {estimated})").format(
            run=result.get("run"),
            loss=result.get("final_loss"),
            peak=_gib(result.get("peak_memory")),
            estimated=_gib(result.get("estimated_peak")),
        )
    )
    if result.get("held_out"):
        from internlocal.train.preference import held_out_line

        typer.echo(held_out_line(result["held_out"]))
    for key, title in (
        ("merged_model", _("merged model")),
        ("gguf_model", _("gguf model")),
        ("quantized_model", _("quantized model")),
    ):
        if result.get(key):
            typer.echo(f"{title}: {result[key]}")
    print_run_notes(result)


def print_run_notes(summary: dict[str, Any]) -> None:
    """How the run adapted to the data, what replay mixed in, and the forgetting guard's before → after."""
    from internlocal.train.adapt import Adaptation
    from internlocal.train.guard import guard_lines

    if summary.get("adaptation"):
        typer.echo(Adaptation(**summary["adaptation"]).describe())
    if summary.get("replay"):
        r = summary["replay"]
        typer.echo(
            _("replay: {examples} general examples answered by {answered_by} (ratio {ratio:g})").format(
                examples=r["examples"], answered_by=r["answered_by"], ratio=r["ratio"]
            )
        )
    guard = summary.get("guard") or {}
    lines = guard_lines(guard)
    for i, line in enumerate(lines):
        # the warning, last when there is one, goes to stderr (its "warning:" may be translated)
        typer.echo(line, err=bool(guard.get("warning")) and i == len(lines) - 1)


@app.command("runs", help=_("Training runs: status, final loss, the models they produced."))
def runs(as_json: JsonOpt = False) -> None:
    rows = services().catalog.list_train_runs()
    if as_json:
        print_json([r.model_dump() | {"summary": r.summary} for r in rows])
        return
    for r in rows:
        s = r.summary
        typer.echo(
            f"{r.id:>3} {r.name:44} {pad(label(STATUS_LABELS, r.status), 9)} "
            + _("loss {loss}").format(loss=s.get("final_loss", "-"))
            + f"  {s.get('quantized_model') or s.get('merged_model') or ''}"
        )


@app.command("stop", help=_("Checkpoint and stop a running run (resume continues it)."))
def stop(run: str) -> None:
    from internlocal.services.training import stop as stop_run

    stop_run(services(), run)
    typer.echo(_("asked {run} to checkpoint and stop").format(run=run))


@app.command("save", help=_("Write a checkpoint now, without stopping."))
def save(run: str) -> None:
    from internlocal.services.training import save_now

    save_now(services(), run)
    typer.echo(_("asked {run} to save a checkpoint").format(run=run))


@app.command("resume", help=_("Continue a stopped, failed or killed run from its newest checkpoint."))
def resume(
    run: str,
    detach: Annotated[bool, typer.Option("--detach", "-d")] = False,
    gpus: Annotated[
        int | None, typer.Option("--gpus", help=_("Continue on this many processes (pretraining, FSDP)."), min=1)
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    from internlocal.cli.progress import follow_job
    from internlocal.services.training import resume as resume_run

    svc = services()
    job = follow_job(svc.jobs, resume_run(svc, run, gpus=gpus), detach=detach, as_json=as_json)
    report_run(job, as_json)
