"""Showing a job's progress on the terminal: a bar with speed and ETA, or NDJSON events (--json)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from internlocal.catalog.schema import Job
from internlocal.errors import DiskFull, JobFailed
from internlocal.i18n import _
from internlocal.jobs import job_status_label
from internlocal.jobs.events import ProgressTracker
from internlocal.jobs.runner import JobRunner


class _Bar:
    """A rich progress bar made on the first progress event, with columns that suit its unit."""

    def __init__(self, title: str):
        self.title = title
        self.progress: Any = None  # rich.progress.Progress, imported with the first event
        self.task: Any = None

    def update(self, done: float, total: float | None, unit: str, message: str) -> None:
        from rich import progress as rp

        if self.progress is None:
            columns = [rp.TextColumn("{task.description}"), rp.BarColumn(), rp.TaskProgressColumn()]
            if unit == "bytes":
                columns += [rp.DownloadColumn(), rp.TransferSpeedColumn()]
            else:
                columns += [rp.MofNCompleteColumn()]
            columns += [rp.TimeRemainingColumn(), rp.TextColumn("{task.fields[message]}")]
            self.progress = rp.Progress(*columns, console=rp.Console(stderr=True))
            self.progress.start()
            self.task = self.progress.add_task(self.title, total=total, message="")
        self.progress.update(self.task, completed=done, total=total, message=message[:40])

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def follow(runner: JobRunner, job_id: int, *, as_json: bool, poll_s: float = 0.1) -> Job:
    """Tail the job's events until it ends (the bar goes to stderr, results to stdout)."""
    tracker = ProgressTracker()
    offset = 0
    bar = None if as_json else _Bar(runner.catalog.get_job(job_id).title)

    def consume() -> None:
        nonlocal offset
        events, offset = runner.read_events(job_id, offset)
        tracker.feed(events)
        if as_json:
            for event in events:
                sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        elif bar is not None and any(e.get("type") == "progress" for e in events):
            p = tracker.progress
            bar.update(p.done, p.total, p.unit, p.message)

    try:
        while True:
            consume()
            try:
                job = runner.refresh_one(runner.catalog.get_job(job_id))
            except DiskFull as exc:
                # the worker died of the full disk and not even its end could be written; the job reads
                # "interrupted" (resumable) the first time it is looked at with space again
                consume()
                raise JobFailed(
                    _("{error} `internlocal jobs resume {job_id}` continues the job.").format(error=exc, job_id=job_id)
                ) from None
            if job.status not in ("queued", "running"):
                consume()
                return job
            time.sleep(poll_s)
    finally:
        if bar is not None:
            bar.stop()


def follow_job(runner: JobRunner, job: Job, *, detach: bool, as_json: bool) -> Job | None:
    """What every job-starting command does next: return at once (--detach), or follow the job to its end.

    Returns the succeeded job, or None when detached; a failed job exits 3 (4 when it failed on the
    network) with its error, and Ctrl+C cancels it (resumable) and exits 130.
    """
    import typer

    from internlocal.cli.common import print_json

    assert job.id is not None
    if detach:
        print_json({"job": job.id}) if as_json else typer.echo(
            _("job {id} started; `internlocal jobs watch {id}`").format(id=job.id)
        )
        return None
    try:
        job = follow(runner, job.id, as_json=as_json)
    except KeyboardInterrupt:
        runner.cancel(job.id)
        typer.echo(
            "\n"
            + _(
                "cancelled; `internlocal jobs resume {id}` continues where it stopped "
                "(one that does not stop: `internlocal jobs cancel {id} --force`)"
            ).format(id=job.id),
            err=True,
        )
        raise typer.Exit(130) from None
    if job.status != "succeeded":
        if not as_json:
            typer.echo(_("error: {message}").format(message=job.error or job_status_label(job.status)), err=True)
        raise typer.Exit(failed_exit_code(runner, job))
    return job


def failed_exit_code(runner: JobRunner, job: Job) -> int:
    """4 when the job failed on the network, else 3 (see errors.py for every exit code)."""
    from internlocal.errors import JobFailed, NetworkError

    assert job.id is not None
    events, __ = runner.read_events(job.id)
    errors = [e for e in events if e.get("type") == "error"]
    if errors and errors[-1].get("exit_code") == NetworkError.exit_code:
        return NetworkError.exit_code
    return JobFailed.exit_code
