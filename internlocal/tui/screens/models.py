"""Models screen: the catalog's models, the curated registry (what fits this machine first), pulls with live
progress (a multi-GB download asks first), convert, delete."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import DataTable, Input, ProgressBar, Static

from internlocal.errors import UserError
from internlocal.formatting import human_bytes, human_count, human_duration
from internlocal.i18n import N_, _, label
from internlocal.jobs import job_status_label
from internlocal.tui.screens.base import AppScreen
from internlocal.tui.screens.dialogs import ConfirmDialog, TextPromptDialog
from internlocal.tui.widgets.fitted_table import Column, FittedTable
from internlocal.tui.widgets.footer import Footer
from internlocal.tui.widgets.job_watch import JobWatcher

# a model's kind and where its files are, as stored in the catalog → what is shown (translated with _() when drawn)
KIND_LABELS = {"chat": N_("chat"), "base": N_("base"), "embedding": N_("embedding")}
STORAGE_LABELS = {"reference": N_("reference"), "store": N_("store")}
# a pull's result status (also in the CLI's --json output) → what the notification says
PULL_STATUS_LABELS = {"pulled": N_("pulled"), "already present": N_("already present")}


class ModelsScreen(AppScreen):
    DEFAULT_CSS = """
    ModelsScreen #pull { margin: 0 1; }
    ModelsScreen #pull-status { height: 2; padding: 0 1; }
    ModelsScreen #pull-status ProgressBar { width: 60; }
    ModelsScreen #local { height: 1fr; max-height: 12; }
    ModelsScreen #registry { height: 2fr; }
    ModelsScreen #search { margin: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+d", "delete_model", N_("Delete model"), priority=True),
        Binding("x", "cancel_pull", N_("Cancel pull")),
        Binding("r", "resume_pull", N_("Resume pull")),
        Binding("k", "quantize", N_("Quantize")),
        Binding("t", "convert", N_("Convert")),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.watcher = JobWatcher()
        self._available = 0  # bytes a model may use here, measured when the screen is shown

    @property
    def job_id(self) -> int | None:
        return self.watcher.job_id

    def compose(self) -> ComposeResult:
        yield Static(
            _("Models  —  pull from the registry, Hugging Face (hf:org/repo[:file]), ModelScope or a URL"),
            classes="heading",
        )
        yield Input(
            placeholder=_("pull: NAME[:TAG] | hf:org/repo[:FILE] | modelscope:org/repo[:FILE] | https://…  (Enter)"),
            id="pull",
            compact=True,
        )
        with Vertical(id="pull-status"):
            yield ProgressBar(id="pull-bar", show_eta=False)
            yield Static("", id="pull-info")
        yield Static(_("In the catalog  (ctrl+d delete · k quantize · t convert)"), classes="heading")
        yield FittedTable(
            [
                Column("name", N_("name")),
                Column("kind", N_("kind"), drop=1),
                Column("format", N_("format")),
                Column("quant", N_("quant")),
                Column("params", N_("params"), drop=2),
                Column("ctx", N_("ctx"), drop=3),
                Column("size", N_("size")),
                Column("where", N_("where"), drop=4),
                Column("source", N_("source"), drop=5),
            ],
            id="local",
            cursor_type="row",
            zebra_stripes=True,
        )
        yield Static(_("Registry  (what fits this machine first · Enter pulls the default tag)"), classes="heading")
        yield Input(placeholder=_("search the registry: internlm, qwen 7b, apache…"), id="search", compact=True)
        yield FittedTable(
            [
                Column("name", N_("name")),
                Column("params", N_("params"), drop=2),
                Column("ctx", N_("ctx"), drop=3),
                Column("default", N_("default"), drop=1),
                Column("size", N_("size")),
                Column("memory", N_("memory")),
                Column("fit", N_("fit")),
                Column("licence", N_("licence"), drop=4),
                Column("tags", N_("tags"), drop=5),
            ],
            id="registry",
            cursor_type="row",
            zebra_stripes=True,
        )
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#pull-bar", ProgressBar).display = False
        self.query_one("#pull-status").display = False  # until a pull starts: the rows go to the tables
        self.query_one("#search", Input).focus()  # F7, type a name, Enter pulls it
        self.set_interval(0.25, self.poll_job)
        self.refresh_local()
        self.measure_and_sort()

    def on_screen_resume(self) -> None:
        self.refresh_local()
        self.measure_and_sort()

    def measure_and_sort(self) -> None:
        """Free memory is measured once per visit (nvidia-smi where there is a GPU), not on every keystroke."""
        from internlocal.services.models import memory_for_models

        self._available = memory_for_models()
        self.refresh_registry(self.query_one("#search", Input).value)

    # -- tables ------------------------------------------------------------------------------------

    def refresh_local(self) -> None:
        if self.services is None:
            return
        self.query_one("#local", FittedTable).set_rows(
            (
                m.name,
                (
                    m.name,
                    _("{kind} · vision").format(kind=label(KIND_LABELS, m.kind))
                    if m.vision
                    else label(KIND_LABELS, m.kind),
                    m.format,
                    m.quantization or "-",
                    human_count(m.parameters),
                    str(m.context_length or "-"),
                    human_bytes(m.size_bytes),
                    label(STORAGE_LABELS, m.storage),
                    m.source or "-",
                ),
            )
            for m in self.ready_services.catalog.list_models()
        )

    def refresh_registry(self, text: str) -> None:
        from internlocal.services.models import registry_rows

        try:
            rows = registry_rows(text, available=self._available)
        except UserError as exc:
            self.notify(str(exc), severity="error")
            return
        fit = {True: _("✓ fits"), False: _("✗ too big"), None: "?"}
        self.query_one("#registry", FittedTable).set_rows(
            (
                row.name,
                (
                    row.name,
                    f"{row.model.parameters_b:g}B",
                    str(row.model.context_length),
                    row.tag,
                    f"{row.size_gb or '-'} GB",
                    f"{row.memory_gb or '-'} GB",
                    fit[row.fits],
                    _("{licence} (gated)").format(licence=row.model.license.split(" ")[0])
                    if row.model.gated
                    else row.model.license.split(" ")[0],
                    " ".join(row.model.tags),
                ),
            )
            for row in rows
        )

    @on(Input.Changed, "#search")
    def search_changed(self, event: Input.Changed) -> None:
        self.refresh_registry(event.value)

    def _selected_local(self) -> str | None:
        return self.query_one("#local", FittedTable).highlighted_key

    # -- pulls -------------------------------------------------------------------------------------

    @on(Input.Submitted, "#pull")
    def pull_submitted(self, event: Input.Submitted) -> None:
        spec = event.value.strip()
        if spec:
            event.input.value = ""
            self.start_pull(spec)

    @on(DataTable.RowSelected, "#registry")
    def registry_selected(self, event: DataTable.RowSelected) -> None:
        self.start_pull(str(event.row_key.value))

    @on(Input.Submitted, "#search")
    def search_submitted(self) -> None:
        """Enter in the search box pulls the first match (the one that fits best), as Enter on its row would."""
        name = self.query_one("#registry", FittedTable).highlighted_key
        if name is not None:
            self.start_pull(name)

    def start_pull(self, spec: str) -> None:
        from internlocal.services.models import pull_question

        if self.services is None:
            return
        if self.job_id is not None and self.ready_services.catalog.get_job(self.job_id).status in ("queued", "running"):
            self.notify(_("A pull is running; wait for it or cancel it (x) first."), severity="warning")
            return
        question = pull_question(spec)
        if question is None:
            self._pull(spec)
        else:
            self.app.push_screen(
                ConfirmDialog(question, confirm_label=_("Pull"), variant="primary"),
                lambda yes: self._pull(spec) if yes else None,
            )

    def _pull(self, spec: str) -> None:
        from internlocal.services.models import start_pull

        job = start_pull(self.ready_services, spec)
        self._watch(job.id)
        self.query_one("#local", DataTable).focus()  # so x / r act on the pull at once
        self.notify(_("Pulling {spec} (job {job_id}); x cancels, r resumes").format(spec=spec, job_id=job.id))

    def _watch(self, job_id: int) -> None:
        self.watcher.watch(job_id)
        bar = self.query_one("#pull-bar", ProgressBar)
        bar.display = True
        self.query_one("#pull-status").display = True
        bar.update(total=None, progress=0)

    def poll_job(self) -> None:
        state = self.watcher.update(self.services)
        if state is None:
            return
        job, p, ended = state
        bar = self.query_one("#pull-bar", ProgressBar)
        if p.total:
            bar.update(total=p.total, progress=p.done)
        parts = [job.title, job_status_label(job.status)]
        if p.total:
            parts.append(_("{done} of {total}").format(done=human_bytes(p.done), total=human_bytes(p.total)))
        if job.status == "running" and p.rate:
            parts.append(_("{rate}/s · ETA {eta}").format(rate=human_bytes(p.rate), eta=human_duration(p.eta_s)))
        if p.message:
            parts.append(p.message)
        if job.error:
            parts.append(job.error)
        self.query_one("#pull-info", Static).update("  ·  ".join(parts))
        if ended:
            self.refresh_local()
            if job.status == "succeeded":
                result = job.result or {}
                self.notify(f"{result.get('model')}: {label(PULL_STATUS_LABELS, str(result.get('status')))}")
            elif job.status == "failed":
                self.notify(job.error or _("the pull failed"), severity="error", timeout=10)

    def action_cancel_pull(self) -> None:
        if self.job_id is not None:
            job = self.ready_services.jobs.cancel(self.job_id)
            self.notify(
                _("Job {job_id}: {status}; r resumes it.").format(job_id=job.id, status=job_status_label(job.status))
            )

    def action_resume_pull(self) -> None:
        if self.job_id is None:
            return
        try:
            self.ready_services.jobs.resume(self.job_id)
        except UserError as exc:
            self.notify(str(exc), severity="warning")
            return
        self.watcher.resumed()

    # -- model actions -----------------------------------------------------------------------------

    def action_delete_model(self) -> None:
        name = self._selected_local()
        if name is None or self.services is None:
            return

        def done(confirmed: bool | None) -> None:
            if not confirmed:
                return
            from internlocal.hub.library import remove_model
            from internlocal.hub.store import Store

            try:
                result = remove_model(self.ready_services.catalog, Store(self.ready_services.settings.store_dir), name)
            except UserError as exc:
                self.notify(str(exc), severity="error")
                return
            self.refresh_local()
            self.notify(
                _("{name} removed; your file {file} is kept").format(name=name, file=result["kept_file"])
                if result["kept_file"]
                else _("{name} removed").format(name=name)
            )

        self.app.push_screen(
            ConfirmDialog(_("Remove the model “{name}”? Files only it uses are deleted.").format(name=name)), done
        )

    def action_quantize(self) -> None:
        name = self._selected_local()
        if name is None or self.services is None:
            return

        def done(qtype: str | None) -> None:
            if qtype:
                from internlocal.services.models import start_quantize

                try:
                    job = start_quantize(self.ready_services, name, qtype)
                except UserError as exc:
                    self.notify(str(exc), severity="error")
                    return
                self._watch(job.id)

        self.app.push_screen(
            TextPromptDialog(_("Quantize {name} to (Q4_K_M, Q5_K_M, Q8_0, …)").format(name=name), "Q4_K_M"), done
        )

    def action_convert(self) -> None:
        name = self._selected_local()
        if name is None or self.services is None:
            return
        from internlocal.services.models import start_convert

        try:
            job = start_convert(self.ready_services, name)
        except UserError as exc:
            self.notify(str(exc), severity="error")
            return
        self._watch(job.id)
