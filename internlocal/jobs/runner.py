"""The one runner for long work: downloads, training, evaluation, indexing.

A job is a function ``fn(ctx: JobContext, **params) -> result`` named by ``"module:function"``.
``submit`` records it in the catalog's ``job`` table and starts it, by default in a detached
subprocess (``python -m internlocal.jobs.worker ID``) so that the UI never owns heavy work and a
job outlives the window that started it; light jobs may run in a thread of the caller.
Either way the job appends events to ``<jobs_dir>/<id>.jsonl`` (see ``events.py``).

Status: queued → running → succeeded | failed | cancelled; a running job whose process died
(killed, crashed, machine rebooted) is found by ``refresh()`` and marked ``interrupted``.
Failed, cancelled and interrupted jobs can be resumed: the function runs again with the state
it last saved.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from internlocal.catalog.catalog import Catalog
from internlocal.catalog.schema import Job, utcnow
from internlocal.config import Settings
from internlocal.errors import UserError, disk_full
from internlocal.i18n import _
from internlocal.jobs import job_status_label
from internlocal.jobs.context import JobCancelled, JobContext
from internlocal.jobs.events import EventWriter, read_events

RESUMABLE = ("failed", "cancelled", "interrupted")


def target_name(fn: Callable[..., Any] | str) -> str:
    return fn if isinstance(fn, str) else f"{fn.__module__}:{fn.__qualname__}"


def resolve_target(target: str) -> Callable[..., Any]:
    module, __, name = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


class JobRunner:
    def __init__(self, catalog: Catalog, settings: Settings):
        self.catalog = catalog
        self.settings = settings
        self.jobs_dir = settings.jobs_dir
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self._processes: dict[int, subprocess.Popen] = {}
        self._threads: dict[int, tuple[threading.Thread, list[JobContext]]] = {}

    # -- paths -------------------------------------------------------------------------------------

    def events_path(self, job_id: int) -> Path:
        return self.jobs_dir / f"{job_id}.jsonl"

    def state_path(self, job_id: int) -> Path:
        return self.jobs_dir / f"{job_id}.state.json"

    def cancel_path(self, job_id: int) -> Path:
        return self.jobs_dir / f"{job_id}.cancel"

    def log_path(self, job_id: int) -> Path:
        return self.jobs_dir / f"{job_id}.log"

    # -- lifecycle ---------------------------------------------------------------------------------

    def submit(
        self,
        target: Callable[..., Any] | str,
        params: dict[str, Any] | None = None,
        *,
        kind: str,
        title: str,
        in_thread: bool = False,
    ) -> Job:
        params = params or {}
        json.dumps(params)  # parameters must survive the trip to the worker process
        job = self.catalog.add_job(
            Job(
                kind=kind,
                target=target_name(target),
                title=title,
                status="queued",
                params_json=json.dumps(params, sort_keys=True),
                events_path="",
            )
        )
        assert job.id is not None
        job = self.catalog.update_job(job.id, events_path=str(self.events_path(job.id)))
        self._start(job, in_thread)
        return self.catalog.get_job(job.id)

    def _start(self, job: Job, in_thread: bool) -> None:
        assert job.id is not None
        if in_thread:
            holder: list[JobContext] = []
            thread = threading.Thread(
                target=execute, args=(self.catalog, self, job.id, holder.append), name=f"job-{job.id}", daemon=True
            )
            self._threads[job.id] = (thread, holder)
            thread.start()
            return
        env = dict(os.environ, INTERNLOCAL_HOME=str(self.settings.home))
        with self.log_path(job.id).open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "internlocal.jobs.worker", str(job.id)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # not killed with the terminal or the TUI that started it
            )
        self._processes[job.id] = proc
        self.catalog.update_job(job.id, pid=proc.pid)

    def cancel(self, job_id: int, *, force: bool = False) -> Job:
        """Ask a job to stop at its next check; a job that is not alive is marked cancelled now.

        ``force`` kills a subprocess job's worker and everything in its process group now (SIGKILL), for a job
        stuck where it never checks (a hung download, a native call). What it saved stays: it resumes from there,
        as after a crash; the locks it held are the kernel's and go with it."""
        job = self.catalog.get_job(job_id)
        if job.status not in ("queued", "running"):
            return job
        self.cancel_path(job_id).touch()
        if job_id in self._threads:
            if force:
                raise UserError(
                    _(
                        "Job {job_id} runs inside this program and cannot be killed alone; it stops at its next check."
                    ).format(job_id=job_id)
                )
            for ctx in self._threads[job_id][1]:
                ctx.request_cancel()
        elif job.pid and self._alive(job):
            if force:
                self._kill_worker(job)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(job.pid, signal.SIGTERM)
        if not self._alive(job):
            if force:
                events = EventWriter(self.events_path(job_id))
                events.emit(
                    "log",
                    level="warning",
                    message="stopped by force (its processes were killed); resume continues from what it saved",
                )
                events.emit("status", status="cancelled")
                events.close()
            return self.catalog.update_job(job_id, status="cancelled", finished_at=utcnow())
        return self.catalog.get_job(job_id)

    def _kill_worker(self, job: Job, timeout_s: float = 10.0) -> None:
        """SIGKILL to the worker's process group (its own session: the loop, converters and pools it started are in
        it or die with it by their parent-death signal), then wait for the worker to be gone."""
        import psutil

        assert job.pid is not None
        try:
            worker = psutil.Process(job.pid)
            group = os.getpgid(job.pid)
            if group == job.pid:  # started with start_new_session: the group is the job's alone
                os.killpg(group, signal.SIGKILL)
            else:
                worker.kill()
        except (psutil.NoSuchProcess, ProcessLookupError):
            return
        if job.id in self._processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._processes[job.id].wait(timeout_s)  # reaped here: not a zombie the next check mistakes
        else:
            psutil.wait_procs([worker], timeout=timeout_s)

    def resume(self, job_id: int, *, params: dict[str, Any] | None = None, in_thread: bool = False) -> Job:
        """Run a failed, cancelled or interrupted job again with its saved state; ``params`` replace some of the
        parameters it was submitted with (a training job resumed on another number of GPUs)."""
        job = self.refresh_one(self.catalog.get_job(job_id))
        if job.status not in RESUMABLE:
            raise UserError(
                _("Job {job_id} is {status}; only failed, cancelled or interrupted jobs can be resumed.").format(
                    job_id=job_id, status=job_status_label(job.status)
                )
            )
        self.cancel_path(job_id).unlink(missing_ok=True)
        changed = {"params_json": json.dumps({**job.params, **params}, sort_keys=True)} if params else {}
        job = self.catalog.update_job(job_id, status="queued", error=None, finished_at=None, **changed)
        self._start(job, in_thread)
        return self.catalog.get_job(job_id)

    def refresh(self) -> list[Job]:
        """All recent jobs, with those whose process died marked ``interrupted``."""
        return [self.refresh_one(job) for job in self.catalog.list_jobs()]

    def refresh_one(self, job: Job) -> Job:
        # a job whose process is gone was interrupted; queued jobs get a grace period to start their worker
        gone = job.status in ("queued", "running") and not self._alive(job)
        if gone and (job.status == "running" or time.time() - _epoch(job.created_at) > 30):
            job = self.catalog.update_job(job.id, status="interrupted", finished_at=utcnow())
        return job

    def wait(self, job_id: int, timeout: float | None = None, poll_s: float = 0.05) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.catalog.get_job(job_id)
            if job.status not in ("queued", "running"):
                return job
            if job_id in self._processes and self._processes[job_id].poll() is not None:
                job = self.refresh_one(self.catalog.get_job(job_id))
                if job.status not in ("queued", "running"):
                    return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout} s")
            time.sleep(poll_s)

    def read_events(self, job_id: int, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        return read_events(self.events_path(job_id), offset)

    def _alive(self, job: Job) -> bool:
        assert job.id is not None
        if job.id in self._threads:
            return self._threads[job.id][0].is_alive()
        if job.id in self._processes:
            return self._processes[job.id].poll() is None
        if not job.pid:
            return False
        import psutil

        try:
            proc = psutil.Process(job.pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False
            cmdline = " ".join(proc.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False
        # a thread job lives in the process that ran it; a subprocess job in its worker (pid reuse check)
        return "internlocal.jobs.worker" in cmdline or job.pid == os.getpid()


def execute(
    catalog: Catalog, runner: JobRunner, job_id: int, on_context: Callable[[JobContext], None] | None = None
) -> Job:
    """Run one job to its end in this process, recording status, events and result."""
    job = catalog.get_job(job_id)
    events = EventWriter(runner.events_path(job_id))
    ctx = JobContext(
        job_id,
        events,
        runner.state_path(job_id),
        runner.cancel_path(job_id),
        settings=runner.settings,
        catalog=catalog,
    )
    if on_context:
        on_context(ctx)
    catalog.update_job(job_id, status="running", pid=os.getpid(), started_at=utcnow(), attempts=job.attempts + 1)
    events.emit("status", status="running", attempt=job.attempts + 1)
    fields: dict[str, Any]
    try:
        ctx.check_cancelled()
        result = resolve_target(job.target)(ctx, **job.params)
        events.emit("result", result=result)
        fields = dict(status="succeeded", result_json=json.dumps(result, default=str))
    except JobCancelled:
        fields = dict(status="cancelled")
    except UserError as exc:  # the exit code tells a network failure from a user's error (cli/progress.py)
        events.emit("error", message=str(exc), exit_code=exc.exit_code)
        fields = dict(status="failed", error=str(exc))
    except Exception as exc:  # a bug in the job: keep the traceback in its events for the report
        full = disk_full(exc)
        if full is not None:  # not a bug: the disk is full (the job resumes once there is space)
            events.emit("error", message=str(full), exit_code=full.exit_code)
            fields = dict(status="failed", error=str(full))
        else:
            events.emit("log", level="error", message=traceback.format_exc())
            message = f"{type(exc).__name__}: {exc}"
            events.emit("error", message=message)
            fields = dict(status="failed", error=message)
    events.emit("status", status=fields["status"])
    events.close()
    return catalog.update_job(job_id, finished_at=utcnow(), **fields)


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()
