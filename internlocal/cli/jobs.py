"""``internlocal jobs …``: background work, its progress, cancel and resume."""

from __future__ import annotations

from typing import Annotated

import typer

from internlocal.cli.common import print_json, services

app = typer.Typer(help="Background jobs (downloads, training, evaluation, indexing).", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _row(job) -> dict:
    return {
        "id": job.id,
        "kind": job.kind,
        "title": job.title,
        "status": job.status,
        "attempts": job.attempts,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "error": job.error,
        "result": job.result,
    }


@app.command("list")
def list_jobs(as_json: JsonOpt = False) -> None:
    """Recent jobs, newest first."""
    jobs = services().jobs.refresh()
    if as_json:
        print_json([_row(j) for j in jobs])
        return
    for j in jobs:
        typer.echo(f"{j.id:>5}  {j.status:11}  {j.kind:16}  {j.title}" + (f"  ({j.error})" if j.error else ""))


@app.command("show")
def show(job_id: int, as_json: JsonOpt = False) -> None:
    """One job, with its last events."""
    svc = services()
    job = svc.jobs.refresh_one(svc.catalog.get_job(job_id))
    events, _ = svc.jobs.read_events(job_id)
    if as_json:
        print_json({**_row(job), "events": events[-50:]})
        return
    for key, value in _row(job).items():
        typer.echo(f"{key:12} {value}")
    for event in events[-10:]:
        typer.echo(f"  {event}")


@app.command("watch")
def watch(job_id: int, as_json: JsonOpt = False) -> None:
    """Follow a job's progress until it ends (Ctrl-C stops watching, not the job)."""
    from internlocal.cli.progress import follow

    job = follow(services().jobs, job_id, as_json=as_json)
    if not as_json:
        typer.echo(f"job {job.id} {job.status}" + (f": {job.error}" if job.error else ""))


@app.command("cancel")
def cancel(
    job_id: int,
    force: Annotated[
        bool, typer.Option("--force", help="Kill its processes now, for a job stuck where it never checks.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Ask a job to stop; it keeps what it finished and can be resumed."""
    job = services().jobs.cancel(job_id, force=force)
    print_json(_row(job)) if as_json else typer.echo(f"job {job.id}: {job.status}")


@app.command("resume")
def resume(job_id: int, as_json: JsonOpt = False) -> None:
    """Run a failed, cancelled or interrupted job again from its saved state, and follow it."""
    from internlocal.cli.progress import follow

    svc = services()
    svc.jobs.resume(job_id)
    job = follow(svc.jobs, job_id, as_json=as_json)
    if not as_json:
        typer.echo(f"job {job.id} {job.status}" + (f": {job.error}" if job.error else ""))
