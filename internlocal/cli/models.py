"""``internlocal models …``: the catalog's models."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from internlocal.cli.common import human_bytes, human_count, print_json, services

app = typer.Typer(help="Models in the catalog.", no_args_is_help=True)


@app.command("list")
def list_models(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """List catalog models."""
    models = services().catalog.list_models()
    if as_json:
        print_json([m.summary() for m in models])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None)
    table.add_column("name", no_wrap=True)
    for column in ("kind", "format", "arch", "quant", "params", "ctx", "size", "where"):
        table.add_column(column, no_wrap=True)
    for m in models:
        table.add_row(m.name, m.kind, m.format, m.architecture or "-", m.quantization or "-", human_count(m.parameters),
                      str(m.context_length or "-"), human_bytes(m.size_bytes), m.storage)
    import sys

    Console(width=None if sys.stdout.isatty() else 160).print(table)  # pipes get whole names, not "…"


@app.command("verify")
def verify(
    names: Annotated[Optional[list[str]], typer.Argument(help="Models to check (default: all).")] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Start the job and return its id.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="NDJSON progress events, then the result.")] = False,
) -> None:
    """Re-hash model files (a background job) and report any that changed or went missing."""
    from internlocal.cli.progress import follow
    from internlocal.hub.verify import verify_models

    svc = services()
    for name in names or []:
        svc.catalog.get_model(name)  # fail now, not in the job, on a typo
    job = svc.jobs.submit(verify_models, {"names": names or None}, kind="models.verify", title="Verify models")
    if detach:
        print_json({"job": job.id}) if as_json else typer.echo(f"job {job.id} started; `internlocal jobs watch {job.id}`")
        return
    job = follow(svc.jobs, job.id, as_json=as_json)
    if not as_json:
        for name, status in (job.result or {}).items():
            typer.echo(f"{status:9} {name}")
        if job.error:
            typer.echo(f"error: {job.error}", err=True)
    bad = job.status != "succeeded" or any(v != "ok" for v in (job.result or {}).values())
    raise typer.Exit(1 if bad else 0)
