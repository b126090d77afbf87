"""Models screen: the catalog's models, the curated registry (what fits this machine first), pulls with live
progress (a multi-GB download asks first), convert, delete."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import DataTable, Footer, Input, ProgressBar, Static

from internlocal.errors import UserError
from internlocal.formatting import human_bytes, human_count, human_duration
from internlocal.tui.screens.base import AppScreen
from internlocal.tui.screens.dialogs import ConfirmDialog, TextPromptDialog
from internlocal.tui.widgets.fitted_table import Column, FittedTable
from internlocal.tui.widgets.job_watch import JobWatcher


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
        Binding("ctrl+d", "delete_model", "Delete model", priority=True),
        Binding("x", "cancel_pull", "Cancel pull"),
        Binding("r", "resume_pull", "Resume pull"),
        Binding("k", "quantize", "Quantize"),
        Binding("t", "convert", "Convert"),
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
            "Models  —  pull from the registry, Hugging Face (hf:org/repo[:file]), ModelScope or a URL",
            classes="heading",
        )
        yield Input(
            placeholder="pull: NAME[:TAG] | hf:org/repo[:FILE] | modelscope:org/repo[:FILE] | https://…  (Enter)",
            id="pull",
            compact=True,
        )
        with Vertical(id="pull-status"):
            yield ProgressBar(id="pull-bar", show_eta=False)
            yield Static("", id="pull-info")
        yield Static("In the catalog  (ctrl+d delete · k quantize · t convert)", classes="heading")
        yield FittedTable(
            [
                Column("name"),
                Column("kind", drop=1),
                Column("format"),
                Column("quant"),
                Column("params", drop=2),
                Column("ctx", drop=3),
                Column("size"),
                Column("where", drop=4),
                Column("source", drop=5),
            ],
            id="local",
            cursor_type="row",
            zebra_stripes=True,
        )
        yield Static("Registry  (what fits this machine first · Enter pulls the default tag)", classes="heading")
        yield Input(placeholder="search the registry: internlm, qwen 7b, apache…", id="search", compact=True)
        yield FittedTable(
            [
                Column("name"),
                Column("params", drop=2),
                Column("ctx", drop=3),
                Column("default", drop=1),
                Column("size"),
                Column("memory"),
                Column("fit"),
                Column("licence", drop=4),
                Column("tags", drop=5),
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
                    f"{m.kind} · vision" if m.vision else m.kind,
                    m.format,
                    m.quantization or "-",
                    human_count(m.parameters),
                    str(m.context_length or "-"),
                    human_bytes(m.size_bytes),
                    m.storage,
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
        fit = {True: "✓ fits", False: "✗ too big", None: "?"}
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
                    row.model.license.split(" ")[0] + (" (gated)" if row.model.gated else ""),
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
            self.notify("A pull is running; wait for it or cancel it (x) first.", severity="warning")
            return
        question = pull_question(spec)
        if question is None:
            self._pull(spec)
        else:
            self.app.push_screen(
                ConfirmDialog(question, confirm_label="Pull", variant="primary"),
                lambda yes: self._pull(spec) if yes else None,
            )

    def _pull(self, spec: str) -> None:
        from internlocal.services.models import start_pull

        job = start_pull(self.ready_services, spec)
        self._watch(job.id)
        self.query_one("#local", DataTable).focus()  # so x / r act on the pull at once
        self.notify(f"Pulling {spec} (job {job.id}); x cancels, r resumes")

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
        parts = [job.title, job.status]
        if p.total:
            parts.append(f"{human_bytes(p.done)} of {human_bytes(p.total)}")
        if job.status == "running" and p.rate:
            parts.append(f"{human_bytes(p.rate)}/s · ETA {human_duration(p.eta_s)}")
        if p.message:
            parts.append(p.message)
        if job.error:
            parts.append(job.error)
        self.query_one("#pull-info", Static).update("  ·  ".join(parts))
        if ended:
            self.refresh_local()
            if job.status == "succeeded":
                self.notify(f"{(job.result or {}).get('model')}: {(job.result or {}).get('status')}")
            elif job.status == "failed":
                self.notify(job.error or "the pull failed", severity="error", timeout=10)

    def action_cancel_pull(self) -> None:
        if self.job_id is not None:
            job = self.ready_services.jobs.cancel(self.job_id)
            self.notify(f"Job {job.id}: {job.status}; r resumes it.")

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
                f"{name} removed" + (f"; your file {result['kept_file']} is kept" if result["kept_file"] else "")
            )

        self.app.push_screen(ConfirmDialog(f"Remove the model “{name}”? Files only it uses are deleted."), done)

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

        self.app.push_screen(TextPromptDialog(f"Quantize {name} to (Q4_K_M, Q5_K_M, Q8_0, …)", "Q4_K_M"), done)

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
