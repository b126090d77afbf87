"""Knowledge screen: create a knowledge base, add and remove folders, watch indexing, search with sources."""

from __future__ import annotations

from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, OptionList, ProgressBar, Static
from textual.widgets.option_list import Option

from internlocal.errors import UserError
from internlocal.i18n import N_, _
from internlocal.jobs import job_status_label
from internlocal.tui.screens.base import AppScreen
from internlocal.tui.screens.chat import ChatScreen
from internlocal.tui.screens.dialogs import DIALOG_CSS, ConfirmDialog
from internlocal.tui.widgets.fitted_table import Column, FittedTable
from internlocal.tui.widgets.footer import Footer
from internlocal.tui.widgets.job_watch import JobWatcher


class KnowledgeScreen(AppScreen):
    DEFAULT_CSS = """
    KnowledgeScreen #form { height: 3; }
    KnowledgeScreen #kb-name { width: 24; }
    KnowledgeScreen.-narrow #kb-name { width: 18; }
    KnowledgeScreen #folder { width: 1fr; }
    KnowledgeScreen #status { height: 2; padding: 0 1; }
    KnowledgeScreen #kbs { height: 1fr; max-height: 10; }
    KnowledgeScreen #hits { height: 2fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "sync", N_("Sync"), priority=True),
        Binding("ctrl+r", "remove_folder", N_("Remove folder"), priority=True),
        Binding("ctrl+d", "delete_kb", N_("Delete"), priority=True),
        Binding("ctrl+t", "chat_with_kb", N_("Chat with it"), priority=True),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.watcher = JobWatcher()
        self.hits: list = []

    def compose(self) -> ComposeResult:
        yield Static(
            _(
                "Knowledge  —  your documents, searchable, with sources "
                "(ctrl+s sync · ctrl+r remove a folder · ctrl+t chat with it · ctrl+d delete)"
            ),
            classes="heading",
        )
        with Horizontal(id="form"):
            yield Input(placeholder=_("knowledge base"), id="kb-name")
            yield Input(
                placeholder=_("folder or file to add (Enter creates the base or adds to it, then indexes)"),
                id="folder",
            )
            yield Button(_("Add"), id="add", variant="success")
        with Vertical(id="status"):
            yield ProgressBar(id="bar", show_eta=True)
            yield Static("", id="info")
        yield FittedTable(
            [
                Column("name", N_("name")),
                Column("files", N_("files")),
                Column("chunks", N_("chunks")),
                Column("skipped", N_("skipped"), drop=2),
                Column("embedder", N_("embedder"), drop=3),
                Column("threshold", N_("threshold"), drop=4),
                Column("folders", N_("folders"), drop=1),
            ],
            id="kbs",
            cursor_type="row",
            zebra_stripes=True,
        )
        yield Input(placeholder=_("search the highlighted knowledge base (Enter)"), id="query")
        yield DataTable(id="hits", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        hits = self.query_one("#hits", DataTable)
        for key, label in (
            ("#", "#"),
            ("source", _("source")),
            ("similarity", _("similarity")),
            ("passage", _("passage")),
        ):
            hits.add_column(label, key=key)
        self.query_one("#bar", ProgressBar).display = False
        self.set_interval(0.3, self.poll)
        self.refresh_kbs()

    def on_screen_resume(self) -> None:
        self.refresh_kbs()

    def on_services_ready(self, _message=None) -> None:
        self.refresh_kbs()

    def refresh_kbs(self) -> None:
        if self.services is None:
            return
        self.query_one("#kbs", FittedTable).set_rows(
            (
                kb.name,
                (
                    kb.name,
                    str(kb.stats.get("files", 0)),
                    str(kb.stats.get("chunks", 0)),
                    str(kb.stats.get("skipped_files", 0)),
                    kb.embedder,
                    f"{kb.threshold:.3f}",
                    ", ".join(kb.folders),
                ),
            )
            for kb in self.ready_services.catalog.list_kbs()
        )

    def selected(self) -> str | None:
        return self.query_one("#kbs", FittedTable).highlighted_key

    # -- create / add / sync ---------------------------------------------------------------------------

    @on(Input.Submitted, "#folder")
    @on(Button.Pressed, "#add")
    def add(self) -> None:
        from internlocal.kb.library import add_folders

        name = self.query_one("#kb-name", Input).value.strip() or self.selected()
        folder = self.query_one("#folder", Input).value.strip()
        if self.services is None or not name or not folder:
            self.notify(_("Give a knowledge base name and a folder."), severity="warning")
            return
        try:
            if self.ready_services.catalog.find_kb(name) is None:
                self._create(name, folder)
                return
            add_folders(self.ready_services.catalog, name, [folder])
        except UserError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return
        self.query_one("#folder", Input).value = ""
        self.start_sync(name)

    @work(thread=True, exclusive=True, group="kb-create")
    def _create(self, name: str, folder: str) -> None:
        # in a thread: the first knowledge base loads the embedding model (seconds)
        from internlocal.kb.library import create_kb

        self.app.call_from_thread(
            self.query_one("#info", Static).update,
            _("Creating {name} (loading the embedding model) …").format(name=name),
        )
        try:
            create_kb(self.ready_services.settings, self.ready_services.catalog, name, [folder])
        except UserError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error", timeout=10)
            self.app.call_from_thread(self.query_one("#info", Static).update, "")
            return
        self.app.call_from_thread(self._created, name)

    def _created(self, name: str) -> None:
        self.query_one("#folder", Input).value = ""
        self.refresh_kbs()
        self.start_sync(name)

    def action_sync(self) -> None:
        name = self.selected()
        if name is not None:
            self.start_sync(name)

    def start_sync(self, name: str) -> None:
        from internlocal.services.knowledge import start_sync

        job = start_sync(self.ready_services, name)
        self.watcher.watch(job.id)
        self.query_one("#bar", ProgressBar).display = True
        self.query_one("#info", Static).update(_("Indexing {name} (job {job_id}) …").format(name=name, job_id=job.id))

    def poll(self) -> None:
        state = self.watcher.update(self.services)
        if state is None:
            return
        job, p, ended = state
        if p.total:
            self.query_one("#bar", ProgressBar).update(total=p.total, progress=p.done)
            self.query_one("#info", Static).update(
                _("{done:.0f}/{total:.0f} files  {message}").format(done=p.done, total=p.total, message=p.message)
            )
        if ended:
            self.refresh_kbs()
            if job.status == "succeeded":
                r = job.result or {}
                skipped = r.get("skipped", [])
                counts = {
                    "files": r.get("files", 0),
                    "chunks": r.get("chunks", 0),
                    "embedded": r.get("chunks_embedded", 0),
                }
                self.query_one("#info", Static).update(
                    _("{files} files, {chunks} chunks; {embedded} chunks embedded; skipped {count}: {which}").format(
                        **counts,
                        count=len(skipped),
                        which="; ".join(f"{s['path'].rsplit('/', 1)[-1]} ({s['reason']})" for s in skipped[:3]),
                    )
                    if skipped
                    else _("{files} files, {chunks} chunks; {embedded} chunks embedded").format(**counts)
                )
            else:
                self.notify(job.error or job_status_label(job.status), severity="error", timeout=10)

    # -- search ----------------------------------------------------------------------------------------

    @on(Input.Submitted, "#query")
    def search(self, event: Input.Submitted) -> None:
        name = self.selected()
        if name is None or not event.value.strip():
            return
        self.query_one("#info", Static).update(_("Searching {name} …").format(name=name))
        self._search(name, event.value.strip())

    @work(thread=True, exclusive=True, group="kb-search")
    def _search(self, name: str, query: str) -> None:
        try:
            hits = self.ready_services.chats.kb_index(name).search(query, k=8)
        except UserError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error", timeout=10)
            return
        self.app.call_from_thread(self._show_hits, name, hits)

    def _show_hits(self, name: str, hits: list) -> None:
        self.hits = hits
        table = self.query_one("#hits", DataTable)
        table.clear()
        for n, hit in enumerate(hits, start=1):
            table.add_row(str(n), hit.citation, f"{hit.similarity:.3f}", " ".join(hit.text.split())[:120], key=hit.cid)
        self.query_one("#info", Static).update(
            _("{count} passages from {name}").format(count=len(hits), name=name)
            if hits
            else _("nothing found in {name}").format(name=name)
        )

    # -- remove a folder -------------------------------------------------------------------------------

    def action_remove_folder(self) -> None:
        """Take a folder out of the highlighted knowledge base (picked when it has several), after a confirmation."""
        name = self.selected()
        if name is None or self.services is None:
            return
        folders = self.ready_services.catalog.get_kb(name).folders
        if not folders:
            self.notify(_("{name} has no folders.").format(name=name), severity="warning")
        elif len(folders) == 1:
            self._confirm_remove(name, folders[0])
        else:

            def picked(folder: str | None) -> None:
                if folder:
                    self._confirm_remove(name, folder)

            self.app.push_screen(FolderPickerDialog(name, folders), picked)

    def _confirm_remove(self, name: str, folder: str) -> None:
        def done(confirmed: bool | None) -> None:
            if confirmed:
                self._remove_folder(name, folder)

        self.app.push_screen(
            ConfirmDialog(
                _("Take {folder} out of {name}? Its passages leave the index; your files stay.").format(
                    folder=folder, name=name
                ),
                confirm_label=_("Remove"),
            ),
            done,
        )

    @work(thread=True, exclusive=True, group="kb-remove")
    def _remove_folder(self, name: str, folder: str) -> None:
        from internlocal.kb.library import remove_folders

        try:
            result = remove_folders(self.ready_services.catalog, name, [folder])
        except UserError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error", timeout=10)
            return
        self.app.call_from_thread(self._folder_removed, result)

    def _folder_removed(self, result: dict) -> None:
        self.refresh_kbs()
        self.hits = []
        self.query_one("#hits", DataTable).clear()  # they may quote the folder's files
        self.query_one("#info", Static).update(
            _("Removed {folders} from {name}: {files} files, {chunks} chunks left the index (your files stay)").format(
                folders=", ".join(result["removed_folders"]),
                name=result["knowledge_base"],
                files=result["files_removed"],
                chunks=result["chunks_removed"],
            )
        )

    # -- delete / chat ---------------------------------------------------------------------------------

    def action_delete_kb(self) -> None:
        from internlocal.kb.library import remove_kb

        name = self.selected()
        if name is None:
            return

        def done(confirmed: bool | None) -> None:
            if confirmed:
                self.ready_services.chats.close_kb(name)
                remove_kb(self.ready_services.catalog, name)
                self.refresh_kbs()
                self.notify(_("Removed {name} (your documents are untouched)").format(name=name))

        self.app.push_screen(
            ConfirmDialog(_("Remove knowledge base {name}? Its index is deleted; your files stay.").format(name=name)),
            done,
        )

    async def action_chat_with_kb(self) -> None:
        name = self.selected()
        if name is None or self.services is None:
            return
        chat = self.ready_services.chats.new_chat()
        self.ready_services.chats.set_mode(chat.id, "kb", name)
        await self.app.switch_mode("chat")
        screen = self.app.screen
        if isinstance(screen, ChatScreen):
            await screen.open_chat(chat.id)
            await screen.refresh_sessions()


class FolderPickerDialog(ModalScreen[str | None]):
    """Which of a knowledge base's folders to take out."""

    DEFAULT_CSS = (
        DIALOG_CSS.format(name="FolderPickerDialog") + "FolderPickerDialog OptionList { height: auto; max-height: 20; }"
    )
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", N_("Cancel"))]

    def __init__(self, name: str, folders: list[str]) -> None:
        super().__init__()
        self.kb_name, self.folders = name, folders

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(_("Which folder leaves {name}?").format(name=self.kb_name), classes="title")
            yield OptionList(*[Option(folder) for folder in self.folders], id="folders")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.folders[event.option_index])
