"""Chat screen: session list, streamed Markdown replies, per-chat model, system prompt and parameters.

Below 100 columns the session list is hidden behind Ctrl+B so the conversation gets the width."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Label, ListItem, ListView, Static

from internlocal.errors import UserError
from internlocal.i18n import N_, _
from internlocal.tui.screens.base import AppScreen

if TYPE_CHECKING:
    from textual.widgets.markdown import MarkdownStream

    from internlocal.chat.service import Reply
from internlocal.tui.widgets.footer import Footer
from internlocal.tui.widgets.messages import ChatLog, MessageView, ShownImage, message_stats
from internlocal.tui.widgets.status import StatusLine

# a chat's mode as the status line names it (the catalog stores the key)
MODE_LABELS = {"kb": N_("kb"), "agent": N_("agent")}


class ServicesReady(Message):
    """The catalog is open and the embedded models registered (sent once, after the first paint)."""


class ReplyStarted(Message):
    """The question is saved and the model loaded; the chat may have a new title."""


@dataclass
class ReplyPiece(Message):
    text: str


@dataclass
class ReplyDone(Message):
    message: object | None  # the saved ChatMessage, None if nothing was saved
    prompt_tokens: int
    completion_tokens: int
    context_length: int
    tokens_per_s: float | None


@dataclass
class ReplyFailed(Message):
    error: str


class SessionItem(ListItem):
    def __init__(self, chat_id: int, title: str) -> None:
        from internlocal.chat.service import shown_title  # the chat stack loads after the first paint

        super().__init__(Label(shown_title(title)))
        self.chat_id = chat_id


class ChatScreen(AppScreen):
    DEFAULT_CSS = """
    ChatScreen #sidebar { width: 32; border-right: solid $panel-lighten-1; }
    ChatScreen.-narrow #sidebar { width: 26; display: none; }
    ChatScreen.-narrow.-sidebar-open #sidebar { display: block; }
    ChatScreen.-wide.-sidebar-closed #sidebar { display: none; }
    ChatScreen #sessions { height: 1fr; }
    ChatScreen #prompt { margin: 0 1; }
    ChatScreen #attachments { margin: 0 2; color: $accent; height: auto; display: none; }
    ChatScreen #attachments.-shown { display: block; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+b", "toggle_sidebar", N_("Chats")),
        Binding("ctrl+n", "new_chat", N_("New chat")),
        Binding("f2", "rename_chat", N_("Rename")),
        Binding("ctrl+d", "delete_chat", N_("Delete chat"), priority=True),  # the prompt Input binds ctrl+d too
        Binding("f3", "pick_model", N_("Model")),
        Binding("f4", "chat_settings", N_("Settings")),
        Binding("ctrl+o", "attach_image", N_("Attach image")),
        Binding("escape", "stop_reply", N_("Stop reply")),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.chat_id: int | None = None
        self.reply: Reply | None = None
        self.generating = False
        self._stop_requested = False
        self._stream: MarkdownStream | None = None
        self._reply_view: MessageView | None = None
        self._ready = False  # sessions listed, a chat open, the prompt enabled
        self._starting = False
        self.attached: list[tuple[str, bytes]] = []  # images going with the next message: (file name, bytes)
        self._draft = ""  # the prompt's text, taken over from the screen this one replaced (a language switch)

    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(id="sidebar"):
                yield Static(_("Chats  (ctrl+n new)"), classes="heading")
                yield ListView(id="sessions")
            with Vertical(id="main"):
                yield ChatLog(id="log")
                yield Static("", id="attachments")
                yield Input(
                    placeholder=_("Ask anything — Enter sends, Esc stops the reply"), id="prompt", disabled=True
                )
        yield StatusLine(id="status")
        yield Footer()

    @property
    def status(self) -> StatusLine:
        return self.query_one(StatusLine)

    # -- start-up ----------------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.query_one(ChatLog).mount(Static(_("Opening the catalog…"), classes="empty"))
        if self.state.startup_error:  # start-up failed before this screen existed
            self.show_startup_error(self.state.startup_error)
        elif self.services is not None:
            self.post_message(ServicesReady())

    # -- a language switch composes a new screen: what the person was doing goes across (tui/language.py)

    def carry_over(self) -> dict[str, Any]:
        draft = self.query_one("#prompt", Input).value if self.is_mounted else self._draft
        return {"chat_id": self.chat_id, "draft": draft, "attached": list(self.attached)}

    def take_over(self, state: dict[str, Any]) -> None:
        self.chat_id = state["chat_id"]
        self._draft = state["draft"]
        self.attached = state["attached"]

    def on_screen_resume(self) -> None:
        if self.services is not None and not self._ready:
            self.post_message(ServicesReady())

    async def on_services_ready(self, __: ServicesReady) -> None:
        if self._ready or self._starting:
            return
        self._starting = True
        try:
            chats = self.ready_services.catalog.list_chats()
            if self.chat_id is not None and any(chat.id == self.chat_id for chat in chats):
                chat_id = self.chat_id  # taken over from the screen this one replaced
            else:
                chat_id = chats[0].id if chats else self.ready_services.chats.new_chat().id
        except UserError as exc:  # e.g. no chat model in the catalog at all
            self.show_startup_error(str(exc))
            return
        await self.refresh_sessions()
        await self.open_chat(chat_id)
        prompt = self.query_one("#prompt", Input)
        prompt.disabled = False
        if self._draft:
            prompt.value = self._draft
        self._show_attachments()
        prompt.focus()
        self._ready = True
        self.preload_model()

    def show_startup_error(self, error: str) -> None:
        log = self.query_one(ChatLog)
        log.remove_children()
        log.mount(MessageView("error", error))
        self.status.state = "cannot start"

    @work(thread=True, group="preload")
    def preload_model(self) -> None:
        """Load the chat's model in the background so the first reply starts at once."""
        if self.chat_id is None:
            return
        try:
            chat = self.ready_services.catalog.get_chat(self.chat_id)
            self.ready_services.chats.engines.get(self.ready_services.chats.model_for(chat))
        except UserError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error", timeout=10)

    # -- sessions ----------------------------------------------------------------------------------

    def action_toggle_sidebar(self) -> None:
        """Show or hide the session list (hidden at first below 100 columns, shown above)."""
        shown = self.query_one("#sidebar").display
        self.set_class(not shown and self.has_class("-narrow"), "-sidebar-open")
        self.set_class(shown and self.has_class("-wide"), "-sidebar-closed")
        if shown and not self.query_one("#prompt", Input).disabled:
            self.query_one("#prompt", Input).focus()
        elif not shown:
            self.query_one("#sessions", ListView).focus()

    async def refresh_sessions(self) -> None:
        sessions = self.query_one("#sessions", ListView)
        if not sessions.is_attached:  # the app is closing (a reply ended while it quit)
            return
        await sessions.clear()
        chats = self.ready_services.catalog.list_chats()
        await sessions.extend([SessionItem(c.id, c.title) for c in chats])
        for index, chat in enumerate(chats):
            if chat.id == self.chat_id:
                sessions.index = index

    async def open_chat(self, chat_id: int) -> None:
        self.chat_id = chat_id
        chat = self.ready_services.catalog.get_chat(chat_id)
        chats = self.ready_services.chats
        images = chats.message_images(chat_id)
        views = []
        for m in self.ready_services.catalog.messages(chat_id):
            shown = [
                ShownImage(i.name, i.size_bytes, i.width, i.height, chats.images.read(i)) for i in images.get(m.id, [])
            ]
            views.append(MessageView(m.role, m.content, message_stats(m) if m.role == "assistant" else "", shown))
        log = self.query_one(ChatLog)
        if not views:
            views_or_hint = [Static(_("Type a question below and press Enter."), classes="empty")]
            await log.remove_children()
            await log.mount_all(views_or_hint)
        else:
            await log.show(views)
        mode = _(MODE_LABELS.get(chat.mode, chat.mode))
        self.status.model = (chat.model_name or "") + (
            f" · {mode} {chat.kb_name or ''}".rstrip() if chat.mode != "chat" else ""
        )
        self.status.context_used = 0
        self.status.state = "ready"
        sessions = self.query_one("#sessions", ListView)
        for index, item in enumerate(sessions.children):
            if isinstance(item, SessionItem) and item.chat_id == chat_id:
                sessions.index = index

    @on(ListView.Selected, "#sessions")
    async def session_selected(self, event: ListView.Selected) -> None:
        if self.generating:
            self.notify(_("A reply is still being written; press Esc to stop it first."), severity="warning")
            return
        if isinstance(event.item, SessionItem) and event.item.chat_id != self.chat_id:
            await self.open_chat(event.item.chat_id)
            self.query_one("#prompt", Input).focus()

    async def action_new_chat(self) -> None:
        if not self._ready or self.generating:
            return
        model = None
        if self.chat_id is not None:
            model = self.ready_services.catalog.get_chat(self.chat_id).model_name
        chat = self.ready_services.chats.new_chat(model_name=model)
        self.chat_id = chat.id
        await self.refresh_sessions()
        await self.open_chat(chat.id)
        self.query_one("#prompt", Input).focus()

    def action_rename_chat(self) -> None:
        from internlocal.tui.screens.dialogs import TextPromptDialog  # dialogs load when first opened

        if not self._ready or self.chat_id is None:
            return
        chat = self.ready_services.catalog.get_chat(self.chat_id)

        async def done(title: str | None) -> None:
            if title:
                self.ready_services.catalog.update_chat(chat.id, title=title)
                await self.refresh_sessions()

        self.app.push_screen(TextPromptDialog(_("Rename chat"), chat.title), done)

    def action_delete_chat(self) -> None:
        from internlocal.tui.screens.dialogs import ConfirmDialog  # dialogs load when first opened

        if not self._ready or self.chat_id is None or self.generating:
            return
        chat = self.ready_services.catalog.get_chat(self.chat_id)

        async def done(confirmed: bool | None) -> None:
            if not confirmed:
                return
            self.ready_services.chats.delete_chat(chat.id)
            remaining = self.ready_services.catalog.list_chats()
            self.chat_id = remaining[0].id if remaining else self.ready_services.chats.new_chat().id
            await self.refresh_sessions()
            await self.open_chat(self.chat_id)

        from internlocal.chat.service import shown_title

        question = _("Delete the chat “{title}” and its messages?").format(title=shown_title(chat.title))
        self.app.push_screen(ConfirmDialog(question), done)

    def action_pick_model(self) -> None:
        from internlocal.tui.screens.dialogs import ModelPickerDialog  # dialogs load when first opened

        if not self._ready or self.chat_id is None or self.generating:
            return
        from internlocal.formatting import human_bytes

        chat = self.ready_services.catalog.get_chat(self.chat_id)
        models = [
            (m.name, f"{m.name}  ({m.quantization or m.format}, {human_bytes(m.size_bytes)}{_vision(m)})")
            for m in self.ready_services.catalog.list_models(kind="chat")
        ]

        def done(name: str | None) -> None:
            if name and name != chat.model_name:
                self.ready_services.catalog.update_chat(chat.id, model_name=name)
                self.status.model = name
                self.preload_model()

        self.app.push_screen(ModelPickerDialog(models, chat.model_name), done)

    def action_kb_mode(self) -> None:
        from internlocal.tui.screens.dialogs import TextPromptDialog  # dialogs load when first opened

        if not self._ready or self.chat_id is None:
            return
        names = [kb.name for kb in self.ready_services.catalog.list_kbs()]
        if not names:
            self.notify(_("No knowledge base yet; create one on the Knowledge screen (F11)."), severity="warning")
            return
        chat = self.ready_services.catalog.get_chat(self.chat_id)

        async def done(name: str | None) -> None:
            if name:
                await self._set_mode("kb", name.strip())

        title = _("Knowledge base ({names})").format(names=", ".join(names))
        self.app.push_screen(TextPromptDialog(title, chat.kb_name or names[0]), done)

    async def action_agent_mode(self) -> None:
        if self._ready and self.chat_id is not None:
            await self._set_mode("agent", self.ready_services.catalog.get_chat(self.chat_id).kb_name)

    def action_quote_answers(self) -> None:
        """Switch the chat's knowledge base between quoting its documents (extractive answers) and generating."""
        if not self._ready or self.chat_id is None:
            return
        try:
            quoting = self.ready_services.chats.toggle_quoting(self.chat_id)
        except UserError as exc:
            self.notify(str(exc), severity="warning")
            return
        self.notify(
            _("Answers now quote the documents' best sentences, with citations")
            if quoting
            else _("Answers are generated again (quotes replace any answer that cites nothing)")
        )

    def action_bad_answer(self) -> None:
        self._judge("bad")

    def action_good_answer(self) -> None:
        self._judge("good")

    def _judge(self, verdict: str) -> None:
        if not self._ready or self.chat_id is None:
            return
        try:
            self.ready_services.chats.judge_answer(self.chat_id, verdict)
        except UserError as exc:
            self.notify(str(exc), severity="warning")
            return
        self.notify(
            _("Marked bad: `internlocal kb eval NAME --tune` will count this question as one to refuse")
            if verdict == "bad"
            else _("Marked good, thank you")
        )

    async def action_agent_python_mode(self) -> None:
        if self._ready and self.chat_id is not None:
            kb_name = self.ready_services.catalog.get_chat(self.chat_id).kb_name
            await self._set_mode("agent", kb_name, tools=("python",))

    async def action_plain_mode(self) -> None:
        if self._ready and self.chat_id is not None:
            await self._set_mode("chat", None)

    async def _set_mode(self, mode: str, kb_name: str | None, tools: tuple[str, ...] = ()) -> None:
        if self.chat_id is None:
            return
        try:
            self.ready_services.chats.set_mode(self.chat_id, mode, kb_name, tools)
        except UserError as exc:
            self.notify(str(exc), severity="error")
            return
        await self.open_chat(self.chat_id)
        if tools:
            from internlocal.agent.sandbox import isolation

            note = isolation().note  # said where the user turns python on, so it is seen before any code runs
            self.notify(
                _("Agent mode with Python: you are asked before each program runs") + (f"\n{note}" if note else ""),
                severity="warning" if note else "information",
                timeout=15 if note else 5,
            )
            return
        self.notify(
            {
                "kb": _("Answers now come from {kb_name}, with sources").format(kb_name=kb_name),
                "agent": _("Agent mode: the model may call tools"),
                "chat": _("Plain chat"),
            }[mode]
        )

    def confirm_tool(self, name: str, arguments: dict) -> bool:
        """From the reply's worker thread: ask whether the agent may run this call (a tool that acts), and wait.
        No answer (the reply stopped, the screen gone) is a no."""
        from internlocal.tui.screens.dialogs import ConfirmDialog

        shown = arguments.get("code") if name == "python" else json.dumps(arguments, ensure_ascii=False)
        shown = str(shown)
        if len(shown) > 1200:
            shown = shown[:1200] + " …"
        answered = threading.Event()
        allowed: list[bool] = []

        def answer(yes: bool | None) -> None:
            allowed.append(bool(yes))
            answered.set()

        dialog = ConfirmDialog(
            _("The agent wants to run {name}:\n\n{shown}\n\nRun it?").format(name=name, shown=shown),
            confirm_label=_("Run"),
            variant="warning",
        )
        self.app.call_from_thread(self.app.push_screen, dialog, answer)
        while not answered.wait(0.2):
            if self._stop_requested or not self.is_attached:
                self.app.call_from_thread(lambda: dialog.is_current and dialog.dismiss(False))
                return False
        return allowed[0]

    def action_chat_settings(self) -> None:
        from internlocal.tui.screens.dialogs import ChatSettingsDialog, param_label  # dialogs load when first opened

        if not self._ready or self.chat_id is None:
            return
        from internlocal.chat.service import chat_params

        chat = self.ready_services.catalog.get_chat(self.chat_id)

        def done(result: dict | None) -> None:
            if result:
                self.ready_services.catalog.update_chat(chat.id, system_prompt=result["system_prompt"])
                self.ready_services.chats.set_params(chat.id, result["params"])
                self.notify(_("Chat settings saved."))

        model = self.ready_services.chats.model_for(chat)
        source = (model.metadata_dict.get("sampling") or {}).get("source")
        recommended = " · ".join(f"{param_label(k)} {v}" for k, v in model.sampling.items())
        note = (
            _("Recommended for {model}: {recommended} ({source}).").format(
                model=model.name, recommended=recommended, source=source
            )
            if recommended
            else ""
        )
        dialog = ChatSettingsDialog(chat.system_prompt, chat_params(chat, model).model_dump(), recommended=note)
        self.app.push_screen(dialog, done)

    # -- images --------------------------------------------------------------------------------------

    def action_attach_image(self) -> None:
        """Ask for an image file's path; the image goes with the next message."""
        from internlocal.tui.screens.dialogs import TextPromptDialog  # dialogs load when first opened

        if not self._ready or self.chat_id is None:
            return

        def done(path: str | None) -> None:
            if path and path.strip():
                self.attach(path.strip().strip("'\""))

        self.app.push_screen(TextPromptDialog(_("Attach an image (path to a PNG, JPEG, WebP … file)"), ""), done)

    def attach(self, path: str | Path) -> bool:
        from internlocal.chat.images import read_image_file
        from internlocal.engines.images import open_image

        try:
            name, data = read_image_file(path)
            open_image(data)  # unreadable or oversized pictures are refused now, not when the message is sent
        except UserError as exc:
            self.notify(str(exc), severity="error")
            return False
        self.attached.append((name, data))
        self._show_attachments()
        return True

    def action_clear_attachments(self) -> None:
        self.attached = []
        self._show_attachments()

    def _show_attachments(self) -> None:
        from internlocal.formatting import human_bytes

        line = self.query_one("#attachments", Static)
        names = ", ".join(f"{name} ({human_bytes(len(data))})" for name, data in self.attached)
        line.update(
            _("Attached: {names} — sent with your next message (palette: Remove attachments)").format(names=names)
            if names
            else ""
        )
        line.set_class(bool(self.attached), "-shown")

    @on(Input.Changed, "#prompt")
    def path_pasted(self, event: Input.Changed) -> None:
        """A path pasted or dropped into the prompt (the whole input an image file's path) is attached."""
        from internlocal.chat.images import looks_like_image_path

        path = looks_like_image_path(event.value) if len(event.value) > 4 else None
        if path is not None and self.attach(path):
            event.input.value = ""
            self.notify(_("Attached {name}; type your question about it.").format(name=path.name))

    # -- replies -----------------------------------------------------------------------------------

    @on(Input.Submitted, "#prompt")
    async def send(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if (not text and not self.attached) or self.chat_id is None:
            return
        if self.generating:
            self.notify(_("Wait for the reply to finish, or press Esc to stop it."), severity="warning")
            return
        event.input.value = ""
        images, self.attached = self.attached, []
        self._show_attachments()
        log = self.query_one(ChatLog)
        for hint in log.query(".empty"):
            await hint.remove()
        shown = [_shown(name, data) for name, data in images]
        await log.add(MessageView("user", text, images=shown))
        self._reply_view = await log.add(MessageView("assistant", "", "…"))
        log.anchor()
        self._stream = self._reply_view.markdown.get_stream(self._reply_view.markdown)
        self.generating, self._stop_requested = True, False
        self.status.state = "thinking…"
        self.generate(self.chat_id, text, images)

    @work(thread=True, exclusive=True, group="reply")
    def generate(self, chat_id: int, text: str, images: list[tuple[str, bytes]]) -> None:
        try:
            reply = self.ready_services.chats.send(chat_id, text, confirm=self.confirm_tool, images=images)
        except UserError as exc:
            self.post_message(ReplyFailed(str(exc)))
            return
        self.reply = reply
        if self._stop_requested:
            reply.cancel()
        self.post_message(ReplyStarted())
        try:
            for piece in reply:
                self.post_message(ReplyPiece(piece))
        except Exception as exc:  # an engine failure must not leave the screen stuck in "generating"
            self.post_message(ReplyFailed(f"{type(exc).__name__}: {exc}"))
            return
        result = reply.result
        self.post_message(
            ReplyDone(
                message=reply.message,
                prompt_tokens=result.prompt_tokens if result else 0,
                completion_tokens=result.completion_tokens if result else 0,
                context_length=reply.context_length,
                tokens_per_s=result.decode_tokens_per_s if result else None,
            )
        )

    async def on_reply_started(self, __: ReplyStarted) -> None:
        await self.refresh_sessions()

    async def on_reply_piece(self, message: ReplyPiece) -> None:
        if self._stream is not None:
            if self.status.state != "writing…":
                self.status.state = "writing…"
            await self._stream.write(message.text)

    async def on_reply_done(self, message: ReplyDone) -> None:
        await self._finish_stream()
        if self._reply_view is not None and message.message is not None:
            self._reply_view.set_stats(message_stats(message.message))
        self.status.context_used = message.prompt_tokens + message.completion_tokens
        self.status.context_size = message.context_length
        self.status.tokens_per_s = message.tokens_per_s
        self.status.state = "ready"
        await self.refresh_sessions()

    async def on_reply_failed(self, message: ReplyFailed) -> None:
        await self._finish_stream()
        if self._reply_view is not None:
            self._reply_view.add_class("-error")
            await self._reply_view.markdown.update(message.error)
            self._reply_view.set_stats("")
        self.status.state = "ready"
        self.notify(message.error, severity="error", timeout=10)

    async def _finish_stream(self) -> None:
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        self.generating = False
        self.reply = None

    def action_stop_reply(self) -> None:
        if self.generating:
            self._stop_requested = True
            if self.reply is not None:
                self.reply.cancel()
            self.status.state = "stopping…"

    def on_unmount(self) -> None:
        self.action_stop_reply()


def _vision(model) -> str:
    return ", " + _("vision") if model.vision else ""


def _shown(name: str, data: bytes) -> ShownImage:
    """An image about to be sent, as the transcript shows it (prepared as it will be stored)."""
    from internlocal.engines.images import prepare_image

    prepared = prepare_image(data)
    return ShownImage(name, len(prepared.data), prepared.width, prepared.height, prepared.data)
