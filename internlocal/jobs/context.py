"""What a job function sees: progress/metric/log reporting, cancellation and resumable state."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from internlocal.jobs.events import EventWriter

if TYPE_CHECKING:
    from internlocal.catalog.catalog import Catalog
    from internlocal.config import Settings


class JobCancelled(Exception):
    """Raised inside a job by ``check_cancelled()``; the runner records the job as cancelled."""


class JobContext:
    """Handed to every job function as its first argument.

    A job is resumable when it keeps what it has finished in ``state`` and calls ``save_state``:
    a resumed job (after cancel, failure or a crash) starts with the state last saved.

    ``settings`` and ``catalog`` are those of the process running the job (the worker's, or the front
    end's for a thread job): a job uses them instead of loading its own.
    """

    PROGRESS_INTERVAL_S = 0.1  # progress events are throttled; the final one always goes out

    def __init__(
        self,
        job_id: int,
        events: EventWriter,
        state_path: Path,
        cancel_path: Path,
        *,
        settings: Settings,
        catalog: Catalog,
    ):
        self.job_id = job_id
        self.settings = settings
        self.catalog = catalog
        self.events = events
        self._state_path = state_path
        self._cancel_path = cancel_path
        self._cancel_requested = False
        self._last_progress = 0.0
        self.state: dict[str, Any] = json.loads(state_path.read_text()) if state_path.exists() else {}

    # -- reporting ---------------------------------------------------------------------------------

    def progress(self, done: float, total: float | None = None, unit: str = "", message: str = "") -> None:
        now = time.monotonic()
        final = total is not None and done >= total
        if not final and now - self._last_progress < self.PROGRESS_INTERVAL_S:
            return
        self._last_progress = now
        self.events.emit("progress", done=done, total=total, unit=unit, message=message)

    def metric(self, **values: Any) -> None:
        self.events.emit("metric", **values)

    def log(self, message: str, level: str = "info") -> None:
        self.events.emit("log", level=level, message=message)

    # -- cancellation ------------------------------------------------------------------------------

    def request_cancel(self) -> None:
        """Called from the SIGTERM handler (subprocess jobs) or the runner (thread jobs)."""
        self._cancel_requested = True

    @property
    def cancelled(self) -> bool:
        return self._cancel_requested or self._cancel_path.exists()

    def check_cancelled(self) -> None:
        if self.cancelled:
            raise JobCancelled()

    # -- resumable state ---------------------------------------------------------------------------

    def save_state(self, state: dict[str, Any] | None = None) -> None:
        """Persist ``state`` atomically (temp file, fsync, rename): a crash leaves the previous one."""
        if state is not None:
            self.state = state
        tmp = self._state_path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(self.state, fh, ensure_ascii=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._state_path)
