"""Jobs screen: every background job with its live progress, rate and ETA; cancel and resume."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Static

from internlocal.formatting import human_bytes, human_duration
from internlocal.jobs.events import ProgressTracker
from internlocal.tui.screens.base import AppScreen


def _bar(fraction: float | None, width: int = 20) -> str:
    if fraction is None:
        return "·" * width
    filled = round(fraction * width)
    return "█" * filled + "░" * (width - filled)


class JobsScreen(AppScreen):
    DEFAULT_CSS = """
    JobsScreen .heading { text-style: bold; padding: 0 1; background: $panel; }
    JobsScreen DataTable { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "cancel_job", "Cancel job"),
        Binding("r", "resume_job", "Resume job"),
        Binding("v", "verify_models", "Verify models"),
    ]
    COLUMNS = ("id", "kind", "title", "status", "progress", "%", "rate", "ETA", "message")

    def __init__(self) -> None:
        super().__init__()
        self._trackers: dict[int, tuple[ProgressTracker, int]] = {}
        self._final: set[int] = set()  # finished jobs whose last events have been read

    def compose(self) -> ComposeResult:
        yield Static("Jobs  (downloads, training, evaluation, indexing run here in the background)", classes="heading")
        yield DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for column in self.COLUMNS:
            table.add_column(column, key=column)
        self.set_interval(0.5, self.refresh_jobs)
        self.refresh_jobs()

    def refresh_jobs(self) -> None:
        if self.services is None:
            return
        table = self.query_one(DataTable)
        runner = self.ready_services.jobs
        for job in runner.refresh():
            if job.id in self._final:
                continue
            tracker, offset = self._trackers.get(job.id, (ProgressTracker(), 0))
            events, offset = runner.read_events(job.id, offset)
            tracker.feed(events)
            self._trackers[job.id] = (tracker, offset)
            if job.status not in ("queued", "running"):
                self._final.add(job.id)
            p = tracker.progress
            fraction = 1.0 if job.status == "succeeded" else p.fraction
            rate = (
                f"{human_bytes(p.rate)}/s" if p.rate and p.unit == "bytes" else (f"{p.rate:.1f}/s" if p.rate else "-")
            )
            row = (
                str(job.id),
                job.kind,
                job.title,
                job.status,
                _bar(fraction),
                f"{fraction * 100:.0f}" if fraction is not None else "-",
                rate if job.status == "running" else "-",
                human_duration(p.eta_s) if job.status == "running" else "-",
                job.error or p.message,
            )
            key = str(job.id)
            if key in table.rows:
                for column, value in zip(self.COLUMNS, row, strict=True):
                    table.update_cell(key, column, value)
            else:
                table.add_row(*row, key=key)

    def _selected_job(self) -> int | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        return int(str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value))

    def action_cancel_job(self) -> None:
        job_id = self._selected_job()
        if job_id is not None:
            job = self.ready_services.jobs.cancel(job_id)
            self._final.discard(job_id)
            self.notify(f"Job {job_id}: {job.status}")

    def action_resume_job(self) -> None:
        from internlocal.errors import UserError

        job_id = self._selected_job()
        if job_id is None:
            return
        try:
            self.ready_services.jobs.resume(job_id)
            self._final.discard(job_id)
        except UserError as exc:
            self.notify(str(exc), severity="warning")

    def action_verify_models(self) -> None:
        from internlocal.services.models import start_verify

        if self.services is not None:
            job = start_verify(self.ready_services)
            self.notify(f"Started job {job.id}: verify models")
            self.refresh_jobs()
