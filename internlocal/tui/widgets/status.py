"""The status line under the chat: model, context used, speed, state."""

from __future__ import annotations

from textual.reactive import reactive
from textual.widgets import Static

from internlocal.i18n import N_, _

# the chat screen sets ``state`` to one of these keys (tests wait for "ready"); the line shows it translated
STATE_LABELS = {
    "starting…": N_("starting…"),
    "ready": N_("ready"),
    "thinking…": N_("thinking…"),
    "writing…": N_("writing…"),
    "stopping…": N_("stopping…"),
    "cannot start": N_("cannot start"),
}


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
        parts = [_("model {name}").format(name=self.model or "-")]
        if self.context_size:
            parts.append(_("context {used}/{size}").format(used=self.context_used, size=self.context_size))
        if self.tokens_per_s:
            parts.append(f"{self.tokens_per_s:.1f} tok/s")
        parts.append(_(STATE_LABELS.get(self.state, self.state)))
        return "  ·  ".join(parts)
