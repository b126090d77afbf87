"""Built-in tools: calculator, date and time, files in chosen folders, knowledge-base search, Python.

The descriptions are written for small models: one short sentence that says *when* to use the
tool, since that is what a 135M model matches the question against.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from internlocal.agent.tools import Tool, ToolError, tool

# -- calculator ------------------------------------------------------------------------------------

MAX_EXPRESSION_CHARS = 500
MAX_INT_BITS = 4096  # ~1,233 digits: plenty for arithmetic, far from a hung process
MAX_EXPONENT = 10_000

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "log": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "abs": abs,
    "round": round,
    "floor": math.floor,
    "ceil": math.ceil,
}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}
# What people and models type instead of Python operators
_SPELLINGS = {"×": "*", "·": "*", "÷": "/", "−": "-", "–": "-", "^": "**"}


def evaluate(expression: str) -> int | float:
    """Arithmetic on numbers only, by walking the syntax tree (never ``eval``); raises ``ToolError``."""
    text = expression.strip()
    for spelled, op in _SPELLINGS.items():
        text = text.replace(spelled, op)
    text = text.rstrip("=").strip()
    if not text:
        raise ToolError("the expression is empty; give one like 37 * 43")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ToolError(
            f"{expression!r} is not an arithmetic expression; use numbers, + - * / // % ** and parentheses"
        ) from None
    try:
        return _eval(tree.body)
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except OverflowError:
        raise ToolError("the result is too large to compute") from None
    except (ValueError, TypeError) as exc:  # math domain errors, round(1.5, 2.5) …
        raise ToolError(f"cannot compute that: {exc}") from None


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ToolError(f"only numbers are allowed, not {node.value!r}")
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        value = _BINARY[type(node.op)](left, right)
        return _check_size(value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise ToolError(f"unknown name {node.id!r}; allowed: {', '.join(sorted({**_CONSTANTS, **_FUNCTIONS}))}")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            shown = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise ToolError(f"the function {shown!r} is not allowed; allowed: {', '.join(sorted(_FUNCTIONS))}")
        if node.keywords:
            raise ToolError("functions take positional arguments only")
        return _check_size(_FUNCTIONS[node.func.id](*(_eval(a) for a in node.args)))
    if isinstance(node, ast.Attribute):
        raise ToolError("attribute access is not allowed; use numbers, operators and the listed functions")
    if isinstance(node, ast.BinOp):
        raise ToolError(f"the operator {type(node.op).__name__} is not allowed; use + - * / // % **")
    raise ToolError(f"{type(node).__name__} is not allowed in a calculation; use numbers, operators and parentheses")


def _check_power(base: int | float, exponent: int | float) -> None:
    if abs(exponent) > MAX_EXPONENT:
        raise ToolError(f"the exponent {exponent} is too large (limit {MAX_EXPONENT})")
    grows = isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1
    if grows and exponent * math.log2(abs(base)) > MAX_INT_BITS:  # decide before computing, not after
        raise ToolError("the result is too large to compute")


def _check_size(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolError("the result is too large to compute")
    if isinstance(value, float) and math.isinf(value):
        raise ToolError("the result is too large to compute")
    return value


def format_number(value: int | float) -> str:
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return format(value, ".12g")
    return str(value)


@tool
def calculator(expression: str) -> str:
    """Calculate arithmetic. Use it for any math question with numbers.

    Args:
        expression: The arithmetic to calculate, with numbers and + - * / ** ( ).
    """
    return format_number(evaluate(expression))


# -- date and time ---------------------------------------------------------------------------------


@tool
def current_datetime() -> str:
    """Get today's date and the current time. Use it for questions about the date, day or time."""
    now = datetime.now().astimezone()
    return f"{now.isoformat(timespec='seconds')} ({now.strftime('%A')})"


# -- files -----------------------------------------------------------------------------------------

MAX_FILE_CHARS = 8000


def read_file_tool(roots: Sequence[Path | str], max_chars: int = MAX_FILE_CHARS) -> Tool:
    """A ``read_file(path)`` tool that reads text files inside ``roots`` only.

    Paths resolve (symlinks followed) before the check, so ``..`` and links pointing outside are
    refused the same way as absolute paths elsewhere.
    """
    folders = [Path(r).expanduser().resolve() for r in roots]
    if not folders:
        raise ValueError("read_file_tool needs at least one folder")
    shown = ", ".join(str(f) for f in folders)

    def locate(path: str) -> Path:
        given = Path(path.strip()).expanduser()
        candidates = [given] if given.is_absolute() else [folder / given for folder in folders]
        inside: Path | None = None
        for candidate in candidates:
            resolved = candidate.resolve()
            if any(resolved == f or resolved.is_relative_to(f) for f in folders):
                if resolved.exists():
                    return resolved
                inside = inside or resolved
        if inside is None:
            raise ToolError(f"{path!r} is outside the folders this tool may read ({shown})")
        raise ToolError(f"there is no file {path!r} in {shown}")

    @tool(untrusted=True)
    def read_file(path: str) -> str:
        """Read a text file from the user's folders. Use it when the question names a file.

        Args:
            path: The file's path, relative to the user's folder (e.g. "notes/todo.md").
        """
        found = locate(path)
        if found.is_dir():
            entries = sorted(p.name + ("/" if p.is_dir() else "") for p in found.iterdir())
            listing = ", ".join(entries[:50]) + (f" … ({len(entries)} in all)" if len(entries) > 50 else "")
            raise ToolError(f"{path!r} is a folder, not a file; it holds: {listing or 'nothing'}")
        if not found.is_file():
            raise ToolError(f"{path!r} is not a regular file")
        with found.open("rb") as fh:
            head = fh.read(max_chars * 4 + 4)  # enough bytes for max_chars characters of UTF-8
        if b"\x00" in head[:8192]:
            raise ToolError(f"{path!r} is a binary file; this tool reads text files only")
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.start < len(head) - 4:  # not just a character cut at the end of what was read
                raise ToolError(f"{path!r} is not UTF-8 text; this tool reads text files only") from None
            text = head[: exc.start].decode("utf-8")
        size = found.stat().st_size
        if len(text) > max_chars or size > len(head):
            return text[:max_chars] + f"\n[cut: showing the first {max_chars} characters of a {size:,}-byte file]"
        return text

    return read_file


# -- knowledge base --------------------------------------------------------------------------------


class Passage(Protocol):
    citation: str
    text: str


def kb_search_tool(
    search: Callable[[str, int], Sequence[Passage]], k: int = 4, max_chars: int = 1200, description: str | None = None
) -> Tool:
    """A ``kb_search(query)`` tool over ``search(query, k)`` (the knowledge-base package supplies it)."""

    @tool(description=description, untrusted=True)
    def kb_search(query: str) -> str:
        """Search the user's notes and documents. Use it for any question about the user's notes, documents,
        projects or files.

        Args:
            query: The words to search for.
        """
        if not query.strip():
            raise ToolError("the query is empty; say what to look for")
        passages = list(search(query, k))
        if not passages:
            return f"Nothing in the documents matches {query!r}."
        blocks = []
        for i, p in enumerate(passages, 1):
            text = " ".join(str(p.text).split())
            if len(text) > max_chars:
                text = text[:max_chars] + " …"
            blocks.append(f"[{i}] ({p.citation}) {text}")
        return "\n".join(blocks)

    return kb_search


# -- python ----------------------------------------------------------------------------------------


def python_tool(timeout_s: float = 10, memory_mb: int = 512, *, bubblewrap: bool | None = None) -> Tool:
    """An opt-in ``python(code)`` tool: runs in a limited subprocess without network, under bubblewrap where the
    machine has it (see sandbox); it acts, so each call needs the user's confirmation."""
    from internlocal.agent.sandbox import describe, run_python

    @tool(acts=True, untrusted=True)
    def python(code: str) -> str:
        """Run Python code and return what it prints. Use it for calculations or data work that needs a program.

        Args:
            code: A complete Python program; print() the results you need.
        """
        if not code.strip():
            raise ToolError("the code is empty")
        return describe(run_python(code, timeout_s, memory_mb, bubblewrap=bubblewrap), timeout_s, memory_mb)

    return python


def default_tools() -> list[Tool]:
    return [calculator, current_datetime]
