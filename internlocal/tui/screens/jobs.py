"""Jobs screen: every background job with its live progress, rate and ETA; cancel and resume."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Static

from internlocal.formatting import human_bytes, human_duration
from internlocal.i18n import N_, _, label
from internlocal.jobs import job_status_label
from internlocal.jobs.events import ProgressTracker
from internlocal.tui.screens.base import AppScreen
from internlocal.tui.widgets.fitted_table import Column, FittedTable
from internlocal.tui.widgets.footer import Footer

# a job's kind as stored in the catalog (identifiers) → what is shown, translated with _() when drawn
KIND_LABELS = {
    "models.pull": N_("models.pull"),
    "models.convert": N_("models.convert"),
    "models.quantize": N_("models.quantize"),
    "models.verify": N_("models.verify"),
    "train.run": N_("train.run"),
    "pretrain.prepare": N_("pretrain.prepare"),
    "eval.run": N_("eval.run"),
    "eval.needlebench": N_("eval.needlebench"),
    "kb.sync": N_("kb.sync"),
}


def kind_label(kind: str) -> str:
    return label(KIND_LABELS, kind)


def _bar(fraction: float | None, width: int = 20) -> str:
    if fraction is None:
        return "·" * width
    filled = round(fraction * width)
    return "█" * filled + "░" * (width - filled)


class JobsScreen(AppScreen):
    DEFAULT_CSS = """
    JobsScreen DataTable { height: 1fr; }
    JobsScreen #detail { height: auto; max-height: 4; padding: 0 1; background: $panel; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "cancel_job", N_("Cancel job")),
        Binding("r", "resume_job", N_("Resume job")),
        Binding("v", "verify_models", N_("Verify models")),
    ]
    # on a narrow terminal the kind goes first (the title says it too), then the rate, then the drawn bar
    COLUMNS = (
        Column("id", N_("id")),
        Column("kind", N_("kind"), drop=4),
        Column("title", N_("title")),
        Column("status", N_("status")),
        Column("progress", N_("progress"), drop=2),
        Column("%"),
        Column("rate", N_("rate"), drop=3),
        Column("ETA", N_("ETA")),
        Column("message", N_("message"), drop=1),
    )

    def __init__(self) -> None:
        super().__init__()
        self._trackers: dict[int, tuple[ProgressTracker, int]] = {}
        self._final: set[int] = set()  # finished jobs whose last events have been read
        self._cancel_asked: set[int] = set()  # jobs asked to stop: the next cancel press kills them

    def compose(self) -> ComposeResult:
        yield Static(
            _("Jobs  (downloads, training, evaluation, indexing run here in the background)"), classes="heading"
        )
        yield FittedTable(self.COLUMNS, id="jobs", cursor_type="row", zebra_stripes=True)
        # the highlighted job's whole message: the column is the first to go on a narrow terminal
        yield Static("", id="detail")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(FittedTable).set_rows([])
        self.set_interval(0.5, self.refresh_jobs)
        self.refresh_jobs()

    def refresh_jobs(self) -> None:
        if self.services is None:
            return
        table = self.query_one(FittedTable)
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
                kind_label(job.kind),
                job.title,
                job_status_label(job.status),
                _bar(fraction),
                f"{fraction * 100:.0f}" if fraction is not None else "-",
                rate if job.status == "running" else "-",
                human_duration(p.eta_s) if job.status == "running" else "-",
                job.error or p.message,
            )
            table.put_row(str(job.id), row)
        self.show_detail()

    def show_detail(self) -> None:
        table = self.query_one(FittedTable)
        key = table.highlighted_key
        if key is None:
            self.query_one("#detail", Static).update("")
            return
        cells = table.cells(key)
        message = cells["message"]
        # Text, not str: a message is not markup ("[Errno 28]" would vanish as a tag)
        self.query_one("#detail", Static).update(
            Text(f"{cells['id']} · {cells['kind']} · {cells['status']}" + (f" — {message}" if message else ""))
        )

    def on_data_table_row_highlighted(self) -> None:
        self.show_detail()

    def _selected_job(self) -> int | None:
        key = self.query_one(FittedTable).highlighted_key
        return None if key is None else int(key)

    def action_cancel_job(self) -> None:
        """The first press asks the job to stop at its next check; a second press on a job still running kills it."""
        from internlocal.errors import UserError

        job_id = self._selected_job()
        if job_id is None:
            return
        force = job_id in self._cancel_asked
        try:
            job = self.ready_services.jobs.cancel(job_id, force=force)
        except UserError as exc:
            self.notify(str(exc), severity="warning")
            return
        self._final.discard(job_id)
        if job.status in ("queued", "running"):
            self._cancel_asked.add(job_id)
            self.notify(_("Job {job_id}: asked to stop; press c again to stop it by force").format(job_id=job_id))
        else:
            self._cancel_asked.discard(job_id)
            self.notify(
                (_("Job {job_id}: {status} (by force)") if force else _("Job {job_id}: {status}")).format(
                    job_id=job_id, status=job_status_label(job.status)
                )
            )

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
            self.notify(_("Started job {job_id}: verify models").format(job_id=job.id))
            self.refresh_jobs()
