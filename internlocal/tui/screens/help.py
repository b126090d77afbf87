"""Help screen: what each screen is for and every key binding."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# internlocal

Chat with local models, run long work as background jobs, and keep everything in one catalog.

## Screens
| key | screen |
|---|---|
| F5 | **Chat** — conversations with catalog models |
| F6 | **Jobs** — downloads, training, evaluation and indexing, with progress |
| F7 | **Models** — the catalog's models, the registry, pulls, conversions |
| F8 | **Serve** — the OpenAI-compatible API: start/stop, URL, request log |
| F9 | **Eval** — run tasks on models, leaderboard, per-item answers |
| F10 | **Train** — recipes with a memory fit, one key to start, live loss curve |
| F11 | **Knowledge** — knowledge bases over your folders: index, search with sources, chat with one (Ctrl+T) |
| Ctrl+P | **Command palette** — every command by name |
| F1 | this help |
| Ctrl+Q | quit |

## Chat
| key | action |
|---|---|
| Enter | send the message |
| Esc | stop the reply being written (what was written is kept) |
| Ctrl+B | show or hide the chat list (hidden at first on terminals under 100 columns) |
| Ctrl+N | new chat |
| F2 | rename the chat |
| Ctrl+D | delete the chat |
| F3 | choose the chat's model |
| F4 | system prompt and generation parameters |
| Ctrl+O | attach an image to the next message (or paste an image file's path into the prompt) |

A vision model (marked "vision" in the F3 picker) sees attached images; a text-only model says it
cannot. Images are shown in the transcript with a preview and kept with the chat.

Replies stream as Markdown. The view follows new text while you are at the bottom; scroll
up to read and it stays put. Chats are saved as you go: every completed message is in the
catalog, also if the app is killed mid-reply.

## Models
| key | action |
|---|---|
| Enter (pull box) | pull: a registry name[:tag], `hf:org/repo[:file]`, `modelscope:org/repo[:file]` or a URL |
| typing (search box) | filter the registry; models that fit in this machine's free memory come first |
| Enter (registry row) | pull that model's default tag (a download over 1 GB asks first, with its size) |
| x / r | cancel / resume the pull (a resumed pull continues from the bytes it has) |
| Ctrl+D | remove the selected model (your own files are kept) |
| k | quantize the selected GGUF model |
| t | convert the selected model (GGUF → HF folder, or HF → GGUF f16) |

## Serve
| key | action |
|---|---|
| Ctrl+S | start or stop the server (model, port and slots from the form) |

Chat with a model on another server: `internlocal models add-remote NAME URL`, then pick it with F3.

## Train
| key | action |
|---|---|
| typing (filter box) | filter the recipes ("qlora cpu"); Enter starts the first, ↓ goes to the list |
| Enter (recipe row) | start that recipe as a job (refused when it will not fit; asks first for a GPU recipe, no GPU) |
| m | the loss curve full screen (Esc returns) |
| s | save a checkpoint now |
| x | checkpoint and stop the run |
| r | resume the selected run from its newest checkpoint |
| p | show the recipe's first example with the trained tokens highlighted |

When a run finishes, its adapter is merged (and checked), exported to GGUF, quantized and
registered: the new model is in the Chat model picker (F3). Recipes that fit this machine are
listed first.

## Eval
| key | action |
|---|---|
| Space / Enter in a list | tick or untick a model or a task (at first: the chat's model, the built-in tasks) |
| Ctrl+R | run the ticked tasks on the ticked models, one model after another (a job; answers are cached) |
| Enter on a score | that run's items: target, the model's answer, score (a NeedleBench score: its heat map) |
| Enter on a task marked ▸ | open or close its per-category and per-subject scores (MMLU, C-Eval, CMMLU) |
| CircularEval box | ask each lettered question once per rotation of its options: `circular_acc` beside `acc` |
| Ctrl+E | save the leaderboard as Markdown, CSV and JSON in `<data dir>/exports/` |
| Ctrl+N | NeedleBench (one needle, English, lengths that fit the context) on the first ticked model |
| Ctrl+G | the newest NeedleBench run's depth × length heat map |

Only scores made the same way share a row: a task run with another version, prompt or item limit
("first N") gets a row of its own. Group averages (bold) are shown for models with every task of
the group.

The line under the lists says how many items the ticked choice is and about how long it takes.

## Knowledge
| key | action |
|---|---|
| Enter (folder box) | create the knowledge base named on the left with that folder, or add it there; then index |
| Enter (search box) | search the highlighted knowledge base: passages with their source and similarity |
| Ctrl+S | sync: index what changed in its folders |
| Ctrl+R | remove a folder from the knowledge base (your files are untouched) |
| Ctrl+T | open a chat that answers from it, with citations |
| Ctrl+D | delete the knowledge base (its index, not your files) |

## Jobs
| key | action |
|---|---|
| c | cancel the selected job |
| r | resume a failed, cancelled or interrupted job |
| v | start a job that re-hashes every model file |

The same jobs are in the CLI: `internlocal jobs list|watch|cancel|resume`.
"""


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90%; height: 90%; border: thick $primary; background: $surface; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,f1,q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(HELP)
