"""``internlocal jobs …``: background work, its progress, cancel and resume."""

from __future__ import annotations

from typing import Annotated

import typer

from internlocal.cli.common import pad, print_json, services
from internlocal.i18n import _
from internlocal.jobs import job_status_label

app = typer.Typer(help=_("Background jobs (downloads, training, evaluation, indexing)."), no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help=_("Machine-readable output."))]


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


@app.command("list", help=_("Recent jobs, newest first."))
def list_jobs(as_json: JsonOpt = False) -> None:
    jobs = services().jobs.refresh()
    if as_json:
        print_json([_row(j) for j in jobs])
        return
    for j in jobs:
        status = pad(job_status_label(j.status), 11)
        typer.echo(f"{j.id:>5}  {status}  {j.kind:16}  {j.title}" + (f"  ({j.error})" if j.error else ""))


@app.command("show", help=_("One job, with its last events."))
def show(job_id: int, as_json: JsonOpt = False) -> None:
    svc = services()
    job = svc.jobs.refresh_one(svc.catalog.get_job(job_id))
    events, __ = svc.jobs.read_events(job_id)
    if as_json:
        print_json({**_row(job), "events": events[-50:]})
        return
    for key, value in _row(job).items():
        typer.echo(f"{key:12} {job_status_label(value) if key == 'status' else value}")
    for event in events[-10:]:
        typer.echo(f"  {event}")


@app.command("watch", help=_("Follow a job's progress until it ends (Ctrl-C stops watching, not the job)."))
def watch(job_id: int, as_json: JsonOpt = False) -> None:
    from internlocal.cli.progress import follow

    job = follow(services().jobs, job_id, as_json=as_json)
    if not as_json:
        typer.echo(_ended(job))


@app.command("cancel", help=_("Ask a job to stop; it keeps what it finished and can be resumed."))
def cancel(
    job_id: int,
    force: Annotated[
        bool, typer.Option("--force", help=_("Kill its processes now, for a job stuck where it never checks."))
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    job = services().jobs.cancel(job_id, force=force)
    print_json(_row(job)) if as_json else typer.echo(
        _("job {id}: {status}").format(id=job.id, status=job_status_label(job.status))
    )


@app.command("resume", help=_("Run a failed, cancelled or interrupted job again from its saved state, and follow it."))
def resume(job_id: int, as_json: JsonOpt = False) -> None:
    from internlocal.cli.progress import follow

    svc = services()
    svc.jobs.resume(job_id)
    job = follow(svc.jobs, job_id, as_json=as_json)
    if not as_json:
        typer.echo(_ended(job))


def _ended(job) -> str:
    """The line that says how a followed job ended: ``job 3 failed: …``."""
    status = job_status_label(job.status)
    if job.error:
        return _("job {id} {status}: {error}").format(id=job.id, status=status, error=job.error)
    return _("job {id} {status}").format(id=job.id, status=status)
