"""Help screen: what each screen is for and every key binding."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

from internlocal.i18n import N_, _

# The help in pieces a translator takes one at a time; the Markdown around them (headings, tables) is built here.
# A section: its heading, its table's column titles, its rows (key, what it does), the paragraphs under the table.
INTRO = N_("Chat with local models, run long work as background jobs, and keep everything in one catalog.")
SECTIONS: list[tuple[str, tuple[str, str], list[tuple[str, str]], list[str]]] = [
    (
        N_("Screens"),
        (N_("key"), N_("screen")),
        [
            ("F5", N_("**Chat** — conversations with catalog models")),
            ("F6", N_("**Jobs** — downloads, training, evaluation and indexing, with progress")),
            ("F7", N_("**Models** — the catalog's models, the registry, pulls, conversions")),
            ("F8", N_("**Serve** — the OpenAI-compatible API: start/stop, URL, request log")),
            ("F9", N_("**Eval** — run tasks on models, leaderboard, per-item answers")),
            ("F10", N_("**Train** — recipes with a memory fit, one key to start, live loss curve")),
            (
                "F11",
                N_(
                    "**Knowledge** — knowledge bases over your folders: index, search with sources, chat with one "
                    "(Ctrl+T)"
                ),
            ),
            ("Ctrl+P", N_("**Command palette** — every command by name")),
            ("F1", N_("this help")),
            ("Ctrl+Q", N_("quit")),
        ],
        [],
    ),
    (
        N_("Chat"),
        (N_("key"), N_("action")),
        [
            ("Enter", N_("send the message")),
            ("Esc", N_("stop the reply being written (what was written is kept)")),
            ("Ctrl+B", N_("show or hide the chat list (hidden at first on terminals under 100 columns)")),
            ("Ctrl+N", N_("new chat")),
            ("F2", N_("rename the chat")),
            ("Ctrl+D", N_("delete the chat")),
            ("F3", N_("choose the chat's model")),
            ("F4", N_("system prompt and generation parameters")),
            ("Ctrl+O", N_("attach an image to the next message (or paste an image file's path into the prompt)")),
        ],
        [
            N_(
                'A vision model (marked "vision" in the F3 picker) sees attached images; a text-only model says '
                "it cannot. Images are shown in the transcript with a preview and kept with the chat."
            ),
            N_(
                "Replies stream as Markdown. The view follows new text while you are at the bottom; scroll up to "
                "read and it stays put. Chats are saved as you go: every completed message is in the catalog, "
                "also if the app is killed mid-reply."
            ),
        ],
    ),
    (
        N_("Models"),
        (N_("key"), N_("action")),
        [
            (
                N_("Enter (pull box)"),
                N_("pull: a registry name[:tag], `hf:org/repo[:file]`, `modelscope:org/repo[:file]` or a URL"),
            ),
            (
                N_("typing (search box)"),
                N_("filter the registry; models that fit in this machine's free memory come first"),
            ),
            (
                N_("Enter (registry row)"),
                N_("pull that model's default tag (a download over 1 GB asks first, with its size)"),
            ),
            ("x / r", N_("cancel / resume the pull (a resumed pull continues from the bytes it has)")),
            ("Ctrl+D", N_("remove the selected model (your own files are kept)")),
            ("k", N_("quantize the selected GGUF model")),
            ("t", N_("convert the selected model (GGUF → HF folder, or HF → GGUF f16)")),
        ],
        [],
    ),
    (
        N_("Serve"),
        (N_("key"), N_("action")),
        [
            ("Ctrl+S", N_("start or stop the server (model, port and slots from the form)")),
        ],
        [N_("Chat with a model on another server: `internlocal models add-remote NAME URL`, then pick it with F3.")],
    ),
    (
        N_("Train"),
        (N_("key"), N_("action")),
        [
            (
                N_("typing (filter box)"),
                N_('filter the recipes ("qlora cpu"); Enter starts the first, ↓ goes to the list'),
            ),
            (
                N_("Enter (recipe row)"),
                N_("start that recipe as a job (refused when it will not fit; asks first for a GPU recipe, no GPU)"),
            ),
            ("m", N_("the loss curve full screen (Esc returns)")),
            ("s", N_("save a checkpoint now")),
            ("x", N_("checkpoint and stop the run")),
            ("r", N_("resume the selected run from its newest checkpoint")),
            ("p", N_("show the recipe's first example with the trained tokens highlighted")),
        ],
        [
            N_(
                "When a run finishes, its adapter is merged (and checked), exported to GGUF, quantized and "
                "registered: the new model is in the Chat model picker (F3). Recipes that fit this machine are "
                "listed first."
            )
        ],
    ),
    (
        N_("Eval"),
        (N_("key"), N_("action")),
        [
            (
                N_("Space / Enter in a list"),
                N_("tick or untick a model or a task (at first: the chat's model, the built-in tasks)"),
            ),
            (
                "Ctrl+R",
                N_("run the ticked tasks on the ticked models, one model after another (a job; answers are cached)"),
            ),
            (
                N_("Enter on a score"),
                N_("that run's items: target, the model's answer, score (a NeedleBench score: its heat map)"),
            ),
            (
                N_("Enter on a task marked ▸"),
                N_("open or close its per-category and per-subject scores (MMLU, C-Eval, CMMLU)"),
            ),
            (
                N_("CircularEval box"),
                N_("ask each lettered question once per rotation of its options: `circular_acc` beside `acc`"),
            ),
            ("Ctrl+E", N_("save the leaderboard as Markdown, CSV and JSON in `<data dir>/exports/`")),
            ("Ctrl+N", N_("NeedleBench (one needle, English, lengths that fit the context) on the first ticked model")),
            ("Ctrl+G", N_("the newest NeedleBench run's depth × length heat map")),
        ],
        [
            N_(
                "Only scores made the same way share a row: a task run with another version, prompt or item limit"
                ' ("first N") gets a row of its own. Group averages (bold) are shown for models with every task '
                "of the group."
            ),
            N_("The line under the lists says how many items the ticked choice is and about how long it takes."),
        ],
    ),
    (
        N_("Knowledge"),
        (N_("key"), N_("action")),
        [
            (
                N_("Enter (folder box)"),
                N_("create the knowledge base named on the left with that folder, or add it there; then index"),
            ),
            (
                N_("Enter (search box)"),
                N_("search the highlighted knowledge base: passages with their source and similarity"),
            ),
            ("Ctrl+S", N_("sync: index what changed in its folders")),
            ("Ctrl+R", N_("remove a folder from the knowledge base (your files are untouched)")),
            ("Ctrl+T", N_("open a chat that answers from it, with citations")),
            ("Ctrl+D", N_("delete the knowledge base (its index, not your files)")),
        ],
        [],
    ),
    (
        N_("Jobs"),
        (N_("key"), N_("action")),
        [
            ("c", N_("cancel the selected job")),
            ("r", N_("resume a failed, cancelled or interrupted job")),
            ("v", N_("start a job that re-hashes every model file")),
        ],
        [N_("The same jobs are in the CLI: `internlocal jobs list|watch|cancel|resume`.")],
    ),
]


def help_markdown() -> str:
    """The help as Markdown, in the language of the moment."""
    blocks = ["# internlocal", _(INTRO)]
    for heading, (key_title, what_title), rows, paragraphs in SECTIONS:
        lines = [f"## {_(heading)}", f"| {_(key_title)} | {_(what_title)} |", "|---|---|"]
        lines += [f"| {_(key)} | {_(what)} |" for key, what in rows]
        blocks.append("\n".join(lines))
        blocks += [_(paragraph) for paragraph in paragraphs]
    return "\n\n".join(blocks) + "\n"


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90%; height: 90%; border: thick $primary; background: $surface; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,f1,q", "dismiss", N_("Close"))]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(help_markdown())
