"""One harness to kill any job with SIGKILL part-way, resume it, and compare its end state with a run that was never
interrupted. A job kind joins by saying how to start it, how far it is, and what its end state is (what "equal"
means for it); ``KILL_POINTS`` bounds how many kills `make test` tries, the ``chaos`` marker tries more.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from internlocal.catalog.schema import Job
from internlocal.services import Services

KILL_POINTS = (0.5,)  # fractions of the job's progress; `make test-chaos` uses CHAOS_KILL_POINTS
CHAOS_KILL_POINTS = (0.15, 0.5, 0.85)


@dataclass
class JobKind:
    name: str
    equal: str  # what "the same end state" means for this kind (docs/reliability.md lists it)
    start: Callable[[Services, str], Job]  # (services, label) → the submitted job
    end_state: Callable[[Services, Job, str], Any]  # (services, finished job, label) → comparable value
    # where the chaos run kills it, when CHAOS_KILL_POINTS do not fit (a job that reports only a few steps): a
    # fraction of its progress, or a test of its own (services, job, attempt) → whether to kill now
    chaos_points: tuple[float | Callable[[Services, Job, int], bool], ...] | None = None
    # how two end states are compared when "equal" is not `==` (loss curves: within a tolerance)
    same: Callable[[Any, Any], bool] | None = None


def attempt_events(services: Services, job: Job, attempt: int) -> list[dict] | None:
    """The events of attempt number ``attempt`` of the job, from its status event on; None while that attempt has
    not started (the events of an earlier attempt say nothing about this one)."""
    events, _ = services.jobs.read_events(job.id)
    starts = [i for i, e in enumerate(events) if e.get("type") == "status" and e.get("attempt") == attempt]
    return events[starts[-1] :] if starts else None


def attempt_started_at(services: Services, job: Job, attempt: int) -> float | None:
    """When attempt number ``attempt`` of the job began, or None before it has."""
    current = attempt_events(services, job, attempt)
    return current[0]["t"] if current else None


def done_so_far(services: Services, job: Job, attempt: int) -> float:
    """The ``done`` of the attempt's last progress event (-1 before it has one): for jobs whose total is not known
    in advance (a streamed corpus)."""
    done = [e["done"] for e in attempt_events(services, job, attempt) or [] if e.get("type") == "progress"]
    return done[-1] if done else -1.0


def progress(services: Services, job: Job, attempt: int) -> float:
    """How far the attempt says it is, 0…1, from its last progress event (-1 while it has not started)."""
    current = attempt_events(services, job, attempt)
    if current is None:
        return -1.0
    fractions = [e["done"] / e["total"] for e in current if e.get("type") == "progress" and e.get("total")]
    return fractions[-1] if fractions else 0.0


def kill_at(services: Services, job: Job, point, attempt: int = 1, timeout: float = 300) -> Job:
    """SIGKILL the job's worker once its attempt ``attempt`` is ``point`` of the way (or once ``point(services, job,
    attempt)`` says so); the job is found interrupted and nothing it started survives it (its children die with it:
    jobs/processes.py)."""
    deadline = time.monotonic() + timeout
    reached = (
        (lambda: progress(services, job, attempt) >= point)
        if isinstance(point, float)
        else (lambda: point(services, job, attempt))
    )
    while not reached():
        current = services.catalog.get_job(job.id)
        where = f"{point:.0%}" if isinstance(point, float) else getattr(point, "__doc__", None) or "its kill point"
        assert current.status in ("queued", "running"), f"{job.title} ended ({current.status}) before {where}"
        assert time.monotonic() < deadline, f"{job.title} did not reach {where} in {timeout} s"
        time.sleep(0.02)
    pid = services.catalog.get_job(job.id).pid
    assert pid
    children = psutil.Process(pid).children(recursive=True)
    os.kill(pid, signal.SIGKILL)
    job = services.jobs.wait(job.id, timeout=30)
    assert job.status == "interrupted", job.status
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [p.cmdline() for p in alive]
    return job


def run_through_kills(services: Services, kind: JobKind, points: tuple[float, ...], label: str) -> Any:
    """Start a job of ``kind``, kill it at each point in turn (resuming after each), let it finish: its end state."""
    job = kind.start(services, label)
    for attempt, point in enumerate(points, start=1):
        job = kill_at(services, job, point, attempt)
        job = services.jobs.resume(job.id)
    job = services.jobs.wait(job.id, timeout=600)
    assert job.status == "succeeded", job.error
    assert job.attempts == len(points) + 1
    return kind.end_state(services, job, label)
