"""The status line under the chat: model, context used, speed, state."""

from __future__ import annotations

from textual.reactive import reactive
from textual.widgets import Static


class StatusLine(Static):
    DEFAULT_CSS = """
    StatusLine { height: 1; padding: 0 1; background: $panel; color: $text-muted; }
    """

    model: reactive[str] = reactive("")
    context_used: reactive[int] = reactive(0)
    context_size: reactive[int] = reactive(0)
    tokens_per_s: reactive[float | None] = reactive(None)
    state: reactive[str] = reactive("starting…")

    def render(self) -> str:
        parts = [f"model {self.model or '-'}"]
        if self.context_size:
            parts.append(f"context {self.context_used}/{self.context_size}")
        if self.tokens_per_s:
            parts.append(f"{self.tokens_per_s:.1f} tok/s")
        parts.append(self.state)
        return "  ·  ".join(parts)
