"""Models screen: the catalog's models, the curated registry, pulls with live progress, convert, delete."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Input, ProgressBar, Static

from internlocal.errors import UserError
from internlocal.formatting import human_bytes, human_count, human_duration
from internlocal.tui.screens.base import AppScreen
from internlocal.tui.screens.dialogs import ConfirmDialog, TextPromptDialog
from internlocal.tui.widgets.job_watch import JobWatcher


class ModelsScreen(AppScreen):
    DEFAULT_CSS = """
    ModelsScreen .heading { text-style: bold; padding: 0 1; background: $panel; }
    ModelsScreen #pull-row { height: 3; }
    ModelsScreen #pull { width: 1fr; }
    ModelsScreen #pull-status { height: 2; padding: 0 1; }
    ModelsScreen #pull-status ProgressBar { width: 60; }
    ModelsScreen #local { height: 1fr; }
    ModelsScreen #registry { height: 1fr; }
    ModelsScreen #search { margin: 0 0; }
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

    @property
    def job_id(self) -> int | None:
        return self.watcher.job_id

    def compose(self) -> ComposeResult:
        yield Static(
            "Models  —  pull from the registry, Hugging Face (hf:org/repo[:file]), ModelScope or a URL",
            classes="heading",
        )
        with Horizontal(id="pull-row"):
            yield Input(
                placeholder="pull: NAME[:TAG] | hf:org/repo[:FILE] | modelscope:org/repo[:FILE] | https://…  (Enter)",
                id="pull",
            )
        with Vertical(id="pull-status"):
            yield ProgressBar(id="pull-bar", show_eta=False)
            yield Static("", id="pull-info")
        yield Static("In the catalog  (ctrl+d delete · k quantize · t convert)", classes="heading")
        yield DataTable(id="local", cursor_type="row", zebra_stripes=True)
        yield Static("Registry  (Enter on a row pulls its default tag)", classes="heading")
        yield Input(placeholder="search the registry: internlm, qwen 7b, apache…", id="search")
        yield DataTable(id="registry", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        local = self.query_one("#local", DataTable)
        for column in ("name", "kind", "format", "quant", "params", "ctx", "size", "where", "source"):
            local.add_column(column, key=column)
        registry = self.query_one("#registry", DataTable)
        for column in ("name", "params", "ctx", "default", "size", "memory", "licence", "tags"):
            registry.add_column(column, key=column)
        self.query_one("#pull-bar", ProgressBar).display = False
        self.set_interval(0.25, self.poll_job)
        self.refresh_local()
        self.refresh_registry("")

    def on_screen_resume(self) -> None:
        self.refresh_local()

    # -- tables ------------------------------------------------------------------------------------

    def refresh_local(self) -> None:
        if self.services is None:
            return
        table = self.query_one("#local", DataTable)
        selected = self._selected_local()
        table.clear()
        for m in self.ready_services.catalog.list_models():
            table.add_row(
                m.name,
                m.kind,
                m.format,
                m.quantization or "-",
                human_count(m.parameters),
                str(m.context_length or "-"),
                human_bytes(m.size_bytes),
                m.storage,
                m.source or "-",
                key=m.name,
            )
        if selected and selected in table.rows:
            table.move_cursor(row=table.get_row_index(selected))

    def refresh_registry(self, text: str) -> None:
        from internlocal.hub.registry import load_registry

        table = self.query_one("#registry", DataTable)
        table.clear()
        try:
            hits = load_registry().search(text)
        except UserError as exc:
            self.notify(str(exc), severity="error")
            return
        for _, m in hits:
            tag = m.default
            table.add_row(
                m.name,
                f"{m.parameters_b:g}B",
                str(m.context_length),
                tag,
                f"{m.size_gb(tag) or '-'} GB",
                f"{m.memory_gb(tag) or '-'} GB",
                m.license.split(" ")[0] + (" (gated)" if m.gated else ""),
                " ".join(m.tags),
                key=m.name,
            )

    @on(Input.Changed, "#search")
    def search_changed(self, event: Input.Changed) -> None:
        self.refresh_registry(event.value)

    def _selected_local(self) -> str | None:
        table = self.query_one("#local", DataTable)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

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

    def start_pull(self, spec: str) -> None:
        from internlocal.services.models import start_pull

        if self.services is None:
            return
        if self.job_id is not None and self.ready_services.catalog.get_job(self.job_id).status in ("queued", "running"):
            self.notify("A pull is running; wait for it or cancel it (x) first.", severity="warning")
            return
        job = start_pull(self.ready_services, spec)
        self._watch(job.id)
        self.query_one("#local", DataTable).focus()  # so x / r act on the pull at once
        self.notify(f"Pulling {spec} (job {job.id}); x cancels, r resumes")

    def _watch(self, job_id: int) -> None:
        self.watcher.watch(job_id)
        bar = self.query_one("#pull-bar", ProgressBar)
        bar.display = True
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
