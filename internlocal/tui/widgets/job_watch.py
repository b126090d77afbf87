"""Following one background job from a screen: its row, its progress, and the moment it ends."""

from __future__ import annotations

from internlocal.catalog.schema import Job
from internlocal.jobs.events import Progress, ProgressTracker


class JobWatcher:
    """Poll ``update()`` from a timer; it reads only the events written since the last call."""

    def __init__(self) -> None:
        self.job_id: int | None = None
        self._tracker = ProgressTracker()
        self._offset = 0
        self._reported_end = False

    def watch(self, job_id: int) -> None:
        self.job_id, self._tracker, self._offset, self._reported_end = job_id, ProgressTracker(), 0, False

    def resumed(self) -> None:
        self._reported_end = False

    def update(self, services) -> tuple[Job, Progress, bool] | None:
        """(job, progress, just_ended) — ``just_ended`` is True once, on the first poll after it ends."""
        if self.job_id is None or services is None:
            return None
        job = services.jobs.refresh_one(services.catalog.get_job(self.job_id))
        events, self._offset = services.jobs.read_events(self.job_id, self._offset)
        self._tracker.feed(events)
        ended = job.status not in ("queued", "running") and not self._reported_end
        if ended:
            self._reported_end = True
        return job, self._tracker.progress, ended
