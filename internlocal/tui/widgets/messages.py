"""The conversation view: one block per message, assistant replies rendered as Markdown."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

if TYPE_CHECKING:
    from textual.widgets import Markdown

ROLE_LABELS = {"user": "You", "assistant": "Assistant", "system": "System", "error": "Error"}


class MessageView(Vertical):
    """A message: a role line (with stats for replies) and its Markdown body."""

    DEFAULT_CSS = """
    MessageView { height: auto; margin: 0 1 1 1; }
    MessageView .role { color: $text-muted; text-style: bold; }
    MessageView.-user .role { color: $accent; }
    MessageView.-assistant .role { color: $success; }
    MessageView .stats { color: $text-muted; }
    MessageView Markdown { margin: 0; padding: 0 0 0 1; }
    MessageView.-error Markdown { color: $error; }
    """

    def __init__(self, role: str, content: str = "", stats: str = "", **kwargs) -> None:
        super().__init__(classes=f"-{role}", **kwargs)
        self.role = role
        self._content = content
        self._stats = stats

    def compose(self) -> ComposeResult:
        from textual.widgets import Markdown  # markdown-it and Textual's Markdown: imported with the first message,
        # after the first paint (no message is shown before the catalog is open)

        yield Static(ROLE_LABELS.get(self.role, self.role), classes="role")
        yield Markdown(self._content)
        yield Static(self._stats, classes="stats")

    @property
    def markdown(self) -> Markdown:
        from textual.widgets import Markdown

        return self.query_one(Markdown)

    def set_stats(self, text: str) -> None:
        self._stats = text
        self.query_one(".stats", Static).update(text)


class ChatLog(VerticalScroll):
    """Scrolls with new text only while the user is at the bottom (anchor released on scroll-up)."""

    DEFAULT_CSS = """
    ChatLog { height: 1fr; }
    ChatLog > .empty { color: $text-muted; margin: 1 2; }
    """

    def on_mount(self) -> None:
        self.anchor()

    async def show(self, views: list[MessageView]) -> None:
        await self.remove_children()
        await self.mount_all(views)
        self.anchor()

    async def add(self, view: MessageView) -> MessageView:
        await self.mount(view)
        return view


def message_stats(message) -> str:
    """'42 tokens · 85.1 tok/s · first token 120 ms' for a stored assistant message."""
    parts = []
    if message.completion_tokens is not None:
        parts.append(f"{message.completion_tokens} tokens")
    if message.tokens_per_s:
        parts.append(f"{message.tokens_per_s:.1f} tok/s")
    if message.ttft_ms is not None:
        parts.append(f"first token {message.ttft_ms:.0f} ms")
    if message.finish_reason == "cancelled":
        parts.append("stopped")
    elif message.finish_reason == "length":
        parts.append("cut at max tokens")
    elif message.finish_reason == "repetition":
        from internlocal.engines.base import REPETITION_NOTE

        parts.append(REPETITION_NOTE)
    line = " · ".join(parts)
    extra = getattr(message, "sources", None) or {}
    for step in extra.get("agent_steps", []):
        line += f"\n→ {step}"
    if extra.get("pipeline"):
        from internlocal.kb.answer import decision_lines  # only once a knowledge-base answer is shown

        line += "".join(f"\n{shown}" for shown in decision_lines(extra["pipeline"]))
    if extra.get("refused") and not extra.get("pipeline"):  # answers stored before the pipeline said why
        line += f"\nno passage was close enough (best similarity {extra['evidence']:.2f} < {extra['threshold']:.2f})"
    for source in extra.get("kb_sources", []):
        line += f"\n[{source['n']}] {source['citation']}" + ("" if source.get("cited") else "  (given, not cited)")
    return line
