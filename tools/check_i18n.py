"""Fails on user-facing English left out of translation (``make lint``; docs/architecture.md, "Languages").

A string is user-facing where it is passed to what shows it: a user error (``UserError`` and its subclasses),
a Textual widget, label, button, placeholder, notification, key binding or palette command, a DataTable column,
typer's help and messages, and the CLI's printing. Such a string must be wrapped in ``_()`` (or ``N_()`` where it
is defined before the language is known); f-strings become ``_("… {name} …").format(name=…)``. Strings with no
words (``""``, ``"·"``, ``"{n}"``) and words from the allow-list (names, formats, units) pass. A line that
deliberately shows English ends with ``# i18n: not translated`` and says why before it.

    python tools/check_i18n.py [PATH …]     # default: the internlocal package
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "internlocal"
# The server speaks to programs (OpenAI and Ollama clients parse its messages): English by design.
EXCLUDED = ("internlocal/server/",)
PRAGMA = "# i18n: not translated"

WRAPPERS = {"_", "N_", "ngettext"}
# Textual widgets whose first argument is text a person reads
WIDGETS = {
    "Static", "Label", "Button", "Checkbox", "RadioButton", "Switch", "TabPane", "Tab", "Link", "Markdown",
    "Collapsible", "Option", "ListItem", "Digits", "Pretty", "ProgressBar", "Rule", "Placeholder", "SystemCommand",
    "Binding", "Hit", "DiscoveryHit", "Text", "Panel", "Table", "Column", "Confirm", "Prompt",
}  # fmt: skip
TEXT_KEYWORDS = {
    "placeholder", "prompt", "title", "label", "tooltip", "description", "help", "text", "sub_title", "subtitle",
    "border_title", "border_subtitle", "message", "header", "caption", "short_help", "epilog", "rich_help_panel",
    "confirmation_prompt", "metavar_help", "help_text", "display",
}  # fmt: skip
# methods whose positional arguments are shown: notifications, widget updates, table columns, CLI printing
SHOWING_METHODS = {
    "notify", "update", "add_column", "add_columns", "echo", "secho", "print", "write", "write_line", "confirm",
    "prompt", "set_status", "show_error", "show_message", "add_row_text", "log_line", "status", "rule", "fail",
    "exit_with", "BadParameter", "Abort", "warn",
}  # fmt: skip
SHOWING_FUNCTIONS = {"print", "echo", "secho", "BadParameter", "confirm", "prompt"}
SHOWN_ATTRIBUTES = {"title", "sub_title", "border_title", "border_subtitle", "tooltip", "placeholder", "label"}

# words that are the same in every language: names, formats, units, keys, protocols
ALLOWED_WORDS = {
    w.lower()
    for w in """
    internlocal InternLM InternVL SmolLM SmolLM2 SmolVLM Qwen Llama llama.cpp llama cpp GGUF GGML gguf LoRA QLoRA NF4
    AWQ GPTQ MTMD mmproj HF Hugging Face ModelScope OpenAI Ollama LMDeploy lmdeploy transformers PyTorch torch CUDA
    ROCm GPU CPU RAM VRAM MB GB KB MiB GiB TB KiB ms tok tokens/s s it/s API URL JSON JSONL YAML TOML CSV Parquet
    SQLite HTTP HTTPS SSE PID ID UUID MFU BLEU ROUGE MMLU GSM8K CEval CMMLU lm-eval lm_eval NeedleBench DPO SFT RAG
    KB TUI CLI Ctrl Alt Shift Esc Enter Tab F1 F2 F3 F4 F5 F6 F7 F8 F9 F10 F11 F12 PgUp PgDn Home End Del Backspace
    ctrl esc enter tab shift alt up down left right pgup pgdn Q4_K_M Q8_0 Q4_0 F16 BF16 FP16 FP32 fp16 bf16 f16 q8_0
    q4_0 int4 int8 EOS BOS KV PNG JPEG JPG WebP EXIF chromadb Chroma BM25 FAISS utf-8 UTF-8 ok OK vs DDP FSDP NCCL
    token tokens gloo x86 AVX AVX2 sha256 SHA-256 Python Textual typer docker Docker ID Markdown PDF DOCX HTML XML
    """.split()  # noqa: SIM905 (a list of 160 quoted words would hide them)
}
# a rich markup tag or a format field is not a word
MARKUP = re.compile(r"\[/?[a-zA-Z0-9 #_.=:@/-]*\]|\{[^{}]*\}|%\(?\w*\)?[sdfr]|https?://\S+|\S+\.\w{2,4}\b|--?[\w-]+")
WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*[A-Za-z]")


def wordy(text: str) -> bool:
    """Whether ``text`` has a word a person would want translated."""
    stripped = MARKUP.sub(" ", text)
    return any(w.lower() not in ALLOWED_WORDS for w in WORD.findall(stripped))


def _name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def user_error_classes(paths: list[Path]) -> set[str]:
    """``UserError`` and every class in the package that derives from it (to a fixed point)."""
    bases: dict[str, set[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases.setdefault(node.name, set()).update(n for b in node.bases if (n := _name(b)))
    found = {"UserError"}
    while True:
        more = {name for name, parents in bases.items() if parents & found} - found
        if not more:
            return found
        found |= more


class Checker(ast.NodeVisitor):
    def __init__(self, path: Path, source: str, user_errors: set[str]) -> None:
        self.path = path
        self.lines = source.splitlines()
        self.user_errors = user_errors
        self.problems: list[str] = []

    # --- what a shown expression may be
    def check(self, node: ast.expr | None, where: str) -> None:
        if node is None:
            return
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if wordy(node.value):
                self.report(node, where, node.value)
        elif isinstance(node, ast.JoinedStr):
            literal = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
            if wordy(literal):
                self.report(node, where, "f-string: " + literal)
        elif isinstance(node, ast.BinOp):
            self.check(node.left, where)
            self.check(node.right, where)
        elif isinstance(node, ast.IfExp):
            self.check(node.body, where)
            self.check(node.orelse, where)
        elif isinstance(node, ast.BoolOp):
            for value in node.values:
                self.check(value, where)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for element in node.elts:
                self.check(element, where)
        elif isinstance(node, ast.Call):
            func = node.func
            # "…".format(…) and "…".join(…): the literal is what shows
            if isinstance(func, ast.Attribute) and func.attr in ("format", "join", "strip", "rstrip", "lstrip"):
                self.check(func.value, where)

    def report(self, node: ast.expr, where: str, text: str) -> None:
        line = self.lines[node.lineno - 1] if node.lineno <= len(self.lines) else ""
        end = self.lines[(node.end_lineno or node.lineno) - 1] if node.end_lineno else line
        if PRAGMA in line or PRAGMA in end:
            return
        shown = text if len(text) < 70 else text[:67] + "…"
        self.problems.append(f"{self.path}:{node.lineno}: {where}: {shown!r} is not wrapped in _()")

    # --- where text is shown
    def visit_Call(self, node: ast.Call) -> None:
        name = _name(node.func)
        if name in WRAPPERS:
            return  # inside _(): done (ruff's INT rules check what is inside)
        if name in self.user_errors:
            for arg in node.args[:1]:
                self.check(arg, f"{name}(…)")
        elif name in WIDGETS:
            positional = node.args[:2]
            if name == "Binding":  # Binding(key, action, description)
                positional = node.args[2:3]
            elif name == "Column":  # Column(key, label): the key is an identifier
                positional = node.args[1:2]
            for arg in positional:
                self.check(arg, f"{name}(…)")
            for keyword in node.keywords:
                if keyword.arg in TEXT_KEYWORDS:
                    self.check(keyword.value, f"{name}({keyword.arg}=…)")
        elif name in SHOWING_METHODS and isinstance(node.func, ast.Attribute):
            for arg in node.args[:1] if name not in ("add_columns",) else node.args:
                self.check(arg, f".{name}(…)")
            for keyword in node.keywords:
                if keyword.arg in TEXT_KEYWORDS:
                    self.check(keyword.value, f".{name}({keyword.arg}=…)")
        elif name in SHOWING_FUNCTIONS and isinstance(node.func, ast.Name):
            for arg in node.args[:1]:
                self.check(arg, f"{name}(…)")
        else:
            # typer.Option(help=…), app.command(help=…), Field(description=…), Input(placeholder=…), …
            for keyword in node.keywords:
                if name == "Field" and keyword.arg == "description" and self.path.as_posix() != "internlocal/config.py":
                    continue  # schema documentation for developers; only the settings' descriptions are shown
                generic = keyword.arg in TEXT_KEYWORDS and keyword.arg not in ("text", "message", "display", "prompt")
                if generic or (keyword.arg in ("placeholder", "prompt") and name in ("Input", "Select", "TextArea")):
                    self.check(keyword.value, f"{name}({keyword.arg}=…)")
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            if isinstance(target, ast.Attribute) and target.attr in SHOWN_ATTRIBUTES:
                self.check(node.value, f".{target.attr} = …")
            if isinstance(target, ast.Name) and target.id == "BINDINGS" and isinstance(node.value, ast.List):
                self._bindings(node.value)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        target = node.target
        if isinstance(target, ast.Name) and target.id == "BINDINGS" and isinstance(node.value, ast.List):
            self._bindings(node.value)
        self.generic_visit(node)

    def _bindings(self, bindings: ast.List) -> None:
        for element in bindings.elts:  # ("key", "action", "description") tuples
            if isinstance(element, ast.Tuple) and len(element.elts) >= 3:
                self.check(element.elts[2], "BINDINGS")

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        # a typer command's docstring is its --help: it must come through help=_(…) instead
        for decorator in node.decorator_list:
            if (
                isinstance(decorator, ast.Call)
                and _name(decorator.func) in ("command", "callback")
                and not any(k.arg == "help" for k in decorator.keywords)
                and ast.get_docstring(node)
            ):
                first = node.body[0]
                assert isinstance(first, ast.Expr)
                self.report(
                    first.value, f"@{_name(decorator.func)} docstring (its --help)", ast.get_docstring(node) or ""
                )
        self.generic_visit(node)


def main(argv: list[str]) -> int:
    given = [Path(a) for a in argv] or [PACKAGE]
    paths = [f for p in given for f in (sorted(p.rglob("*.py")) if p.is_dir() else [p])]
    every = sorted(PACKAGE.rglob("*.py"))
    user_errors = user_error_classes(every)
    problems: list[str] = []
    for path in paths:
        relative = path.resolve().relative_to(ROOT).as_posix()
        if relative.startswith(EXCLUDED):
            continue
        source = path.read_text(encoding="utf-8")
        checker = Checker(Path(relative), source, user_errors)
        checker.visit(ast.parse(source))
        problems += checker.problems
    for problem in problems:
        print(problem)
    if problems:
        print(
            f"\n{len(problems)} user-facing strings are not wrapped for translation (docs/architecture.md, Languages)."
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
