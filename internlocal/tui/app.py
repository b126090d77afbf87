"""The Textual application: screens as modes, a command palette, start-up off the paint path.

Only Textual, the Chat screen and our light modules are imported before the first paint; every other
screen is imported when its mode is first entered, and the catalog (sqlmodel, ~0.5 s), settings
(pydantic) and the model engine load in a worker thread after the paint.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, ClassVar

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen

from internlocal.errors import UserError
from internlocal.i18n import LANGUAGES, N_, _, current_language
from internlocal.tui.screens.chat import ChatScreen, ServicesReady

if TYPE_CHECKING:
    from internlocal.config import Settings
    from internlocal.services import Services


def _screen(module: str, name: str) -> Callable[[], Screen]:
    """A mode's screen, imported when the mode is first entered."""

    def make() -> Screen:
        return getattr(importlib.import_module(f"internlocal.tui.screens.{module}"), name)()

    return make


class InternLocalApp(App):
    TITLE = "internlocal"
    MODES: ClassVar[dict[str, str | Callable[[], Screen]]] = {
        "chat": ChatScreen,
        "models": _screen("models", "ModelsScreen"),
        "jobs": _screen("jobs", "JobsScreen"),
        "serve": _screen("serve", "ServeScreen"),
        "eval": _screen("evaluate", "EvalScreen"),
        "train": _screen("train", "TrainScreen"),
        "knowledge": _screen("knowledge", "KnowledgeScreen"),
    }
    DEFAULT_MODE = "chat"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "help", N_("Help")),
        Binding("f5", "switch_mode('chat')", N_("Chat")),
        Binding("f6", "switch_mode('jobs')", N_("Jobs")),
        Binding("f7", "switch_mode('models')", N_("Models")),
        Binding("f8", "switch_mode('serve')", N_("Serve")),
        Binding("f9", "switch_mode('eval')", N_("Eval")),
        Binding("f10", "switch_mode('train')", N_("Train")),
        Binding("f11", "switch_mode('knowledge')", N_("Knowledge")),
        Binding("ctrl+q", "quit", N_("Quit"), priority=True),
    ]

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__()
        self._settings = settings
        self.services: Services | None = None
        self.startup_error: str | None = None

    def on_mount(self) -> None:
        # after the first frame: the start-up thread's imports (sqlmodel, pydantic) would hold the GIL while the
        # screen paints
        self.call_after_refresh(self.open_services)

    @work(thread=True, group="startup")
    def open_services(self) -> None:
        from internlocal.bootstrap import bootstrap

        try:
            services = bootstrap(self._settings)
        except UserError as exc:
            self.call_from_thread(self._startup_failed, str(exc))
            return
        self.call_from_thread(self._services_ready, services)

    def _services_ready(self, services: Services) -> None:
        self.services = services
        self.screen.post_message(ServicesReady())

    def _startup_failed(self, error: str) -> None:
        self.startup_error = error
        self.notify(error, title=_("Cannot start"), severity="error", timeout=60)
        screen = self.screen
        if isinstance(screen, ChatScreen):
            screen.show_startup_error(error)

    def action_help(self) -> None:
        from internlocal.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand(_("Chat"), _("Go to the chat screen (F5)"), lambda: self.switch_mode("chat"))
        yield SystemCommand(_("Jobs"), _("Go to background jobs (F6)"), lambda: self.switch_mode("jobs"))
        yield SystemCommand(
            _("Models"), _("Pull, import, convert, quantize and delete models (F7)"), lambda: self.switch_mode("models")
        )
        yield SystemCommand(_("Serve"), _("Run the OpenAI-compatible server (F8)"), lambda: self.switch_mode("serve"))
        yield SystemCommand(_("Eval"), _("Evaluate models and compare them (F9)"), lambda: self.switch_mode("eval"))
        yield SystemCommand(
            _("Train"), _("Finetune from a recipe, watch the loss curve (F10)"), lambda: self.switch_mode("train")
        )
        yield SystemCommand(
            _("Knowledge"),
            _("Knowledge bases over your documents: index, search, sources (F11)"),
            lambda: self.switch_mode("knowledge"),
        )
        yield SystemCommand(_("Help"), _("Key bindings and screens (F1)"), self.action_help)
        for language, name in LANGUAGES.items():
            if language != current_language():
                yield SystemCommand(
                    _("Language: {name}").format(name=name),
                    _("Show the interface in {name} (saved in the settings)").format(name=name),
                    lambda language=language: self.run_action(f"set_language({language!r})"),
                )
        if isinstance(screen, ChatScreen):
            yield SystemCommand(_("New chat"), _("Start a new conversation (Ctrl+N)"), screen.action_new_chat)
            yield SystemCommand(_("Rename chat"), _("Rename this conversation (F2)"), screen.action_rename_chat)
            yield SystemCommand(_("Delete chat"), _("Delete this conversation (Ctrl+D)"), screen.action_delete_chat)
            yield SystemCommand(_("Choose model"), _("Pick the model for this chat (F3)"), screen.action_pick_model)
            yield SystemCommand(
                _("Attach image"),
                _("An image for the next message; a vision model sees it (Ctrl+O, or paste its path)"),
                screen.action_attach_image,
            )
            yield SystemCommand(
                _("Remove attachments"), _("Send the next message without them"), screen.action_clear_attachments
            )
            yield SystemCommand(_("Chat settings"), _("System prompt and parameters (F4)"), screen.action_chat_settings)
            yield SystemCommand(
                _("Answer from a knowledge base"),
                _("Replies cite your documents, or say they have no answer"),
                screen.action_kb_mode,
            )
            yield SystemCommand(
                _("Agent mode"),
                _("The model may call tools: calculator, date, and the knowledge base's search"),
                screen.action_agent_mode,
            )
            yield SystemCommand(
                _("Quote the documents"),
                _("Knowledge-base answers as the documents' own sentences with citations (again: generated)"),
                screen.action_quote_answers,
            )
            yield SystemCommand(
                _("Bad answer"),
                _("Mark the last knowledge-base answer bad: `kb eval --tune` learns to refuse such questions"),
                screen.action_bad_answer,
            )
            yield SystemCommand(
                _("Good answer"), _("Mark the last knowledge-base answer good"), screen.action_good_answer
            )
            yield SystemCommand(
                _("Agent mode with Python"),
                _("The agent may also run Python in a sandbox; you confirm each program first"),
                screen.action_agent_python_mode,
            )
            yield SystemCommand(
                _("Plain chat"), _("The model alone, no knowledge base or tools"), screen.action_plain_mode
            )
        if type(screen).__name__ == "EvalScreen":  # its module loads on the screen's first visit (lazy screens)
            from internlocal.tui.screens.evaluate import EvalScreen

            assert isinstance(screen, EvalScreen)
            yield SystemCommand(
                "NeedleBench", _("Needle-in-a-haystack on the first ticked model (Ctrl+N)"), screen.action_needlebench
            )
            yield SystemCommand(
                _("NeedleBench heat map"),
                _("The newest run's depth × length heat map (Ctrl+G)"),
                screen.action_needle_map,
            )
        jobs = sys.modules.get("internlocal.tui.screens.jobs")  # imported once the Jobs screen was opened
        if jobs is not None and isinstance(screen, jobs.JobsScreen):
            yield SystemCommand(_("Verify models"), _("Re-hash every model file as a job"), screen.action_verify_models)

    async def action_set_language(self, language: str) -> None:
        from internlocal.tui.language import busy_reason, switch_language

        reason = busy_reason(self)
        if reason is not None:
            self.notify(reason, severity="warning")
            return
        try:
            await switch_language(self, language)
        except UserError as exc:
            self.notify(str(exc), title=_("Cannot change the language"), severity="error")

    async def action_quit(self) -> None:
        # a reply being written is stopped (and saved) before the app goes
        for screen in self.screen_stack:
            if isinstance(screen, ChatScreen):
                screen.action_stop_reply()
        self.exit()

    def on_unmount(self) -> None:
        if self.services is not None:
            self.services.close()


def run(settings: Settings | None = None) -> int:
    InternLocalApp(settings).run()
    return 0
