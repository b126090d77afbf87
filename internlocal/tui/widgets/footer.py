"""The footer every screen shows: Textual's, with the key bindings' descriptions in the current language.

Bindings are class attributes, written before the language is known (``N_("Cancel job")``); the footer is
composed after, and again whenever the bindings change, so it translates each description as it draws it.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Footer as TextualFooter
from textual.widgets._footer import FooterKey  # not exported; the footer composes these, one per binding

from internlocal.i18n import _


class Footer(TextualFooter):
    def compose(self) -> ComposeResult:
        for widget in super().compose():
            if isinstance(widget, FooterKey) and widget.description:
                widget.description = _(widget.description)
            yield widget
