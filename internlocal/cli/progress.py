"""Showing a job's progress on the terminal: a bar with speed and ETA, or NDJSON events (--json)."""

from __future__ import annotations

import json
import sys
import time

from internlocal.catalog.schema import Job
from internlocal.jobs.events import ProgressTracker
from internlocal.jobs.runner import JobRunner


def follow(runner: JobRunner, job_id: int, *, as_json: bool, poll_s: float = 0.1) -> Job:
    """Tail the job's events until it ends; Ctrl-C stops watching, not the job."""
    tracker = ProgressTracker()
    offset = 0
    bar = None
    if not as_json:
        from rich.progress import BarColumn, DownloadColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn, TransferSpeedColumn

        bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), DownloadColumn(),
                       TransferSpeedColumn(), TimeRemainingColumn(), transient=False)
        bar.start()
        task = bar.add_task(runner.catalog.get_job(job_id).title, total=None)
    try:
        while True:
            events, offset = runner.read_events(job_id, offset)
            tracker.feed(events)
            if as_json:
                for event in events:
                    sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
                sys.stdout.flush()
            elif bar is not None and tracker.progress.total:
                bar.update(task, completed=tracker.progress.done, total=tracker.progress.total)
            job = runner.refresh_one(runner.catalog.get_job(job_id))
            if job.status not in ("queued", "running"):
                events, offset = runner.read_events(job_id, offset)
                tracker.feed(events)
                if as_json:
                    for event in events:
                        sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
                return job
            time.sleep(poll_s)
    finally:
        if bar is not None:
            bar.stop()
