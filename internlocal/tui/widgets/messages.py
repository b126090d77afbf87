"""The conversation view: one block per message, assistant replies rendered as Markdown."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from internlocal.i18n import N_, _

if TYPE_CHECKING:
    from textual.widgets import Markdown

ROLE_LABELS = {"user": N_("You"), "assistant": N_("Assistant"), "system": N_("System"), "error": N_("Error")}
PREVIEW_COLUMNS = 24  # an image's preview width in cells (two pixels per cell vertically)


@dataclass(frozen=True)
class ShownImage:
    """An image as a message shows it: caption facts, and its bytes for the preview (None: the file is gone)."""

    name: str
    size_bytes: int
    width: int
    height: int
    data: bytes | None


def image_caption(image: ShownImage) -> str:
    from internlocal.formatting import human_bytes

    caption = _("image {name} · {width}×{height} · {size}").format(
        name=image.name, width=image.width, height=image.height, size=human_bytes(image.size_bytes)
    )
    return caption if image.data is not None else caption + " · " + _("file no longer stored")


def image_preview(image: ShownImage, columns: int = PREVIEW_COLUMNS):
    """The picture drawn with half-block characters (rich-pixels: two pixels per cell, any terminal), or None."""
    if image.data is None:
        return None
    import io

    from PIL import Image
    from rich_pixels import Pixels

    picture = Image.open(io.BytesIO(image.data)).convert("RGB")
    width = min(columns, picture.width)
    rows = max(1, round(picture.height * width / picture.width / 2))  # a cell is about twice as tall as wide
    return Pixels.from_image(picture, resize=(width, rows * 2))


class ImageView(Vertical):
    """One attached image: its caption line and a small preview."""

    DEFAULT_CSS = """
    ImageView { height: auto; padding: 0 0 0 1; }
    ImageView .caption { color: $text-muted; }
    ImageView .preview { height: auto; width: auto; }
    """

    def __init__(self, image: ShownImage) -> None:
        super().__init__()
        self.image = image

    def compose(self) -> ComposeResult:
        yield Static(image_caption(self.image), classes="caption")
        preview = image_preview(self.image)
        if preview is not None:
            yield Static(preview, classes="preview")


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

    def __init__(
        self, role: str, content: str = "", stats: str = "", images: list[ShownImage] | None = None, **kwargs
    ) -> None:
        super().__init__(classes=f"-{role}", **kwargs)
        self.role = role
        self._content = content
        self._stats = stats
        self.images = images or []

    def compose(self) -> ComposeResult:
        from textual.widgets import Markdown  # markdown-it and Textual's Markdown: imported with the first message,
        # after the first paint (no message is shown before the catalog is open)

        yield Static(_(ROLE_LABELS.get(self.role, self.role)), classes="role")
        for image in self.images:
            yield ImageView(image)
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
        parts.append(_("{n} tokens").format(n=message.completion_tokens))
    if message.tokens_per_s:
        parts.append(f"{message.tokens_per_s:.1f} tok/s")
    if message.ttft_ms is not None:
        parts.append(_("first token {ms:.0f} ms").format(ms=message.ttft_ms))
    if message.finish_reason == "cancelled":
        parts.append(_("stopped"))
    elif message.finish_reason == "length":
        parts.append(_("cut at max tokens"))
    elif message.finish_reason == "repetition":
        from internlocal.engines.base import REPETITION_NOTE

        parts.append(_(REPETITION_NOTE))  # marked with N_() where it is defined
    line = " · ".join(parts)
    extra = getattr(message, "sources", None) or {}
    for step in extra.get("agent_steps", []):
        line += f"\n→ {step}"
    if extra.get("pipeline"):
        from internlocal.kb.answer import decision_lines  # only once a knowledge-base answer is shown

        line += "".join(f"\n{shown}" for shown in decision_lines(extra["pipeline"]))
    if extra.get("refused") and not extra.get("pipeline"):  # answers stored before the pipeline said why
        line += "\n" + _("no passage was close enough (best similarity {evidence:.2f} < {threshold:.2f})").format(
            evidence=extra["evidence"], threshold=extra["threshold"]
        )
    for source in extra.get("kb_sources", []):
        line += f"\n[{source['n']}] {source['citation']}" + (
            "" if source.get("cited") else "  " + _("(given, not cited)")
        )
    return line
