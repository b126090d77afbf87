"""Modal dialogs: confirm, text prompt, chat settings (system prompt + parameters), model picker, NeedleBench map."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, ScrollableContainer, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Static, TextArea
from textual.widgets.button import ButtonVariant
from textual.widgets.option_list import Option

from internlocal.i18n import N_, _

if TYPE_CHECKING:
    from internlocal.evals.needlebench import NeedleMap

DIALOG_CSS = """
{name} {{ align: center middle; }}
{name} > Vertical {{
    width: 72; height: auto; max-height: 90%; border: thick $primary; background: $surface; padding: 1 2;
}}
{name} .title {{ text-style: bold; margin-bottom: 1; }}
{name} .error {{ color: $error; height: auto; }}
{name} .buttons {{ height: auto; align-horizontal: right; margin-top: 1; }}
{name} Button {{ margin-left: 1; }}
"""


class ConfirmDialog(ModalScreen[bool]):
    DEFAULT_CSS = DIALOG_CSS.format(name="ConfirmDialog")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(False)", N_("Cancel")),
        Binding("y", "dismiss(True)", N_("Yes"), show=False),
    ]

    def __init__(self, question: str, confirm_label: str | None = None, variant: ButtonVariant = "error") -> None:
        """``confirm_label``: the confirming button's text, already translated (Delete when not given)."""
        super().__init__()
        self.question, self.confirm_label, self.variant = question, confirm_label, variant

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, classes="title")
            with Horizontal(classes="buttons"):
                yield Button(_("Cancel"), id="no")
                yield Button(self.confirm_label or _("Delete"), id="yes", variant=self.variant)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class TextPromptDialog(ModalScreen[str | None]):
    DEFAULT_CSS = DIALOG_CSS.format(name="TextPromptDialog")
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", N_("Cancel"))]

    def __init__(self, title: str, value: str = "") -> None:
        super().__init__()
        self.title_text, self.value = title, value

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.title_text, classes="title")
            yield Input(self.value, id="value")
            with Horizontal(classes="buttons"):
                yield Button(_("Cancel"), id="cancel")
                yield Button(_("OK"), id="ok", variant="primary")

    def on_input_submitted(self) -> None:
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._submit()
        else:
            self.dismiss(None)

    def _submit(self) -> None:
        value = self.query_one("#value", Input).value.strip()
        self.dismiss(value or None)


PARAM_FIELDS = ("temperature", "top_p", "top_k", "repeat_penalty", "max_tokens", "seed")
# a sampling parameter as a person reads it (the key with spaces for underscores, translated)
PARAM_LABELS = {
    "temperature": N_("temperature"),
    "top_p": N_("top p"),
    "top_k": N_("top k"),
    "min_p": N_("min p"),
    "repeat_penalty": N_("repeat penalty"),
    "max_tokens": N_("max tokens"),
    "seed": N_("seed"),
}


def param_label(name: str) -> str:
    """``top_p`` → ``top p``, in the language of the moment."""
    return _(PARAM_LABELS[name]) if name in PARAM_LABELS else name.replace("_", " ")


class ChatSettingsDialog(ModalScreen[dict[str, Any] | None]):
    """System prompt and generation parameters of one chat; validated before it closes."""

    DEFAULT_CSS = (
        DIALOG_CSS.format(name="ChatSettingsDialog")
        + """
    ChatSettingsDialog TextArea { height: 6; }
    ChatSettingsDialog Grid { grid-size: 2; grid-columns: 18 1fr; grid-rows: 3; height: auto; }
    ChatSettingsDialog Grid Label { padding-top: 1; }
    """
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", N_("Cancel")),
        Binding("ctrl+s", "save", N_("Save")),
    ]

    def __init__(self, system_prompt: str, params: dict[str, Any], recommended: str = "") -> None:
        super().__init__()
        self.system_prompt, self.params, self.recommended = system_prompt, params, recommended

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(_("Chat settings"), classes="title")
            yield Label(_("System prompt"))
            yield TextArea(self.system_prompt, id="system_prompt")
            with Grid():
                for name in PARAM_FIELDS:
                    yield Label(param_label(name))
                    value = self.params.get(name)
                    yield Input(
                        "" if value is None else str(value), id=name, placeholder=_("random") if name == "seed" else ""
                    )
            if self.recommended:  # the model's own sampling, used for whatever this chat does not set
                yield Static(self.recommended, id="recommended")
            yield Static("", classes="error", id="error")
            with Horizontal(classes="buttons"):
                yield Button(_("Cancel"), id="cancel")
                yield Button(_("Save"), id="save", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(None)

    def action_save(self) -> None:
        from internlocal.engines.base import GenerationParams
        from internlocal.errors import UserError

        values: dict[str, Any] = {}
        for name in PARAM_FIELDS:
            raw = self.query_one(f"#{name}", Input).value.strip()
            if raw:
                values[name] = raw
        try:
            # an emptied field means the default; stop strings are not edited here and are kept
            params = GenerationParams.from_user(**values, stop=self.params.get("stop") or [])
        except UserError as exc:
            self.query_one("#error", Static).update(str(exc))
            return
        self.dismiss({"system_prompt": self.query_one("#system_prompt", TextArea).text, "params": params})


class ModelPickerDialog(ModalScreen[str | None]):
    DEFAULT_CSS = (
        DIALOG_CSS.format(name="ModelPickerDialog") + "ModelPickerDialog OptionList { height: auto; max-height: 20; }"
    )
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", N_("Cancel"))]

    def __init__(self, models: list[tuple[str, str]], current: str | None) -> None:
        super().__init__()
        self.models, self.current = models, current

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(_("Choose the model for this chat"), classes="title")
            yield OptionList(*[Option(f"{label}", id=name) for name, label in self.models], id="models")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        for index, (name, __) in enumerate(self.models):
            if name == self.current:
                options.highlighted = index

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)


class NeedleMapDialog(ModalScreen[None]):
    """One NeedleBench run as a heat map: depths as rows, lengths as columns, red (0) to green (1)."""

    DEFAULT_CSS = """
    NeedleMapDialog { align: center middle; }
    NeedleMapDialog > Vertical {
        width: auto; max-width: 95%; height: auto; max-height: 90%; border: thick $primary; background: $surface;
        padding: 1 2;
    }
    NeedleMapDialog .title { text-style: bold; margin-bottom: 1; width: auto; }
    NeedleMapDialog ScrollableContainer { height: auto; width: auto; max-height: 30; }
    NeedleMapDialog .note { color: $text-muted; margin-top: 1; width: auto; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q", "dismiss", N_("Close"))]

    def __init__(self, heat_map: NeedleMap) -> None:
        super().__init__()
        self.heat_map = heat_map

    def compose(self) -> ComposeResult:
        from rich.text import Text

        from internlocal.tui.widgets.heatmap import HeatMap

        with Vertical():
            yield Static(Text(self.heat_map.title()), classes="title")
            with ScrollableContainer():
                yield HeatMap(self.heat_map, id="heatmap")
            legend = _("rows: needle depth · columns: document tokens · red 0 → green 1 · Esc closes")
            yield Static(Text(legend + (f"\n{self.heat_map.note}" if self.heat_map.note else "")), classes="note")
