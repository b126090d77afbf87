"""Tools described by their type hints and docstrings (Lagent's idea), callable by a model.

    @tool
    def weather(city: str, unit: Literal["C", "F"] = "C") -> str:
        '''Current weather in a city.

        Args:
            city: The city's name, e.g. "Paris".
            unit: Temperature unit.
        '''

``weather.openai()`` is the OpenAI ``{"type": "function", …}`` entry an engine takes;
``weather.call({"city": "Paris"})`` validates the arguments and returns text. A model's bad
arguments or a tool's failure come back as one ``Error: …`` sentence the model can act on: the
agent loop never crashes on them and never shows the model a traceback.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

MAX_RESULT_CHARS = 12_000  # a safety net for any tool; the built-in ones cut their own output shorter


class ToolError(Exception):
    """Raised inside a tool for a failure the model should read as one sentence."""


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object
    fn: Callable[..., Any]
    # it writes or executes: the agent runs it only after the user confirms that call (the TUI asks; the CLI
    # needs the flag that enables the tool), never on a model's or a document's say-so alone
    acts: bool = False
    # its results carry text from outside the user's question (documents, files, program output) that may try to
    # give the model orders: the agent's prompt then says that tool results are data, not instructions
    untrusted: bool = False

    def openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def call(self, arguments: dict[str, Any] | str | None) -> str:
        """Validate ``arguments`` (a dict or its JSON) and run the tool; always returns text."""
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                return f"Error: the arguments for {self.name} are not valid JSON ({exc.msg}); send a JSON object."
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            return f"Error: the arguments for {self.name} must be a JSON object, not {type(arguments).__name__}."
        try:
            values = self._validate(arguments)
        except _BadArguments as exc:
            return f"Error: bad arguments for {self.name}: {exc}. Expected: {self._signature()}."
        try:
            result = self.fn(**values)
        except ToolError as exc:
            return f"Error: {exc}"
        except Exception as exc:  # a tool's own bug must not end the agent; the model gets one line
            return f"Error: {self.name} failed: {type(exc).__name__}: {exc}"
        return _as_text(result)

    # -- validation ------------------------------------------------------------------------------

    def _validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        from pydantic import ValidationError

        model = self._model()
        try:
            validated = model.model_validate(arguments)
        except ValidationError as exc:
            problems = []
            for err in exc.errors()[:3]:
                where = ".".join(str(p) for p in err["loc"]) or "arguments"
                problems.append(f"{where}: {err['msg'].lower()}")
            raise _BadArguments("; ".join(problems)) from None
        return {name: getattr(validated, name) for name in model.model_fields}

    def _model(self):
        model = self.__dict__.get("_pydantic_model")
        if model is None:
            from pydantic import ConfigDict, create_model

            fields: dict[str, Any] = {}
            hints = typing.get_type_hints(self.fn)
            for name, param in inspect.signature(self.fn).parameters.items():
                default = ... if param.default is inspect.Parameter.empty else param.default
                fields[name] = (hints.get(name, Any), default)
            model = create_model(  # field definitions built at run time
                f"{self.name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
            )
            self.__dict__["_pydantic_model"] = model
        return model

    def _signature(self) -> str:
        props = self.parameters.get("properties", {})
        required = set(self.parameters.get("required", []))
        parts = [
            f"{name}{'' if name in required else '?'}: {spec.get('type', 'value')}" for name, spec in props.items()
        ]
        return "{" + ", ".join(parts) + "}"


class _BadArguments(Exception):
    pass


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    acts: bool = False,
    untrusted: bool = False,
):
    """Decorator: ``@tool`` or ``@tool(name=…, description=…, acts=True, untrusted=True)`` turns a typed function
    into a ``Tool``."""

    def wrap(f: Callable[..., Any]) -> Tool:
        summary, arg_docs = parse_docstring(inspect.getdoc(f) or "")
        return Tool(
            name=name or f.__name__,
            description=description or summary,
            parameters=schema_for(f, arg_docs),
            fn=f,
            acts=acts,
            untrusted=untrusted,
        )

    return wrap(fn) if fn is not None else wrap


# -- docstrings ------------------------------------------------------------------------------------

_SECTION = re.compile(r"^(Args|Arguments|Parameters|Returns|Return|Raises|Yields|Examples?|Notes?):\s*$")
_ARG_LINE = re.compile(r"^(\*{0,2}\w+)\s*(?:\(([^)]*)\))?\s*:\s*(.*)$")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Google-style docstring → (summary, {argument: description}).

    The summary is everything before the first section (joined into one paragraph), so a
    second explanatory paragraph still reaches the model.
    """
    summary_lines: list[str] = []
    args: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    arg_indent: int | None = None
    for raw in doc.splitlines():
        line = raw.rstrip()
        header = _SECTION.match(line.strip()) if not raw.startswith((" ", "\t")) else None
        if header:
            section, current, arg_indent = header.group(1), None, None
            continue
        if section is None:
            summary_lines.append(line.strip())
            continue
        if section not in ("Args", "Arguments", "Parameters") or not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        match = _ARG_LINE.match(line.strip())
        if match and (arg_indent is None or indent <= arg_indent):
            arg_indent = indent
            current = match.group(1).lstrip("*")
            args[current] = match.group(3).strip()
        elif current is not None:  # a continuation line of the current argument
            args[current] = f"{args[current]} {line.strip()}".strip()
    summary = " ".join(" ".join(summary_lines).split())
    return summary, args


# -- JSON schema from type hints -------------------------------------------------------------------

_SIMPLE: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    Path: {"type": "string"},
    dict: {"type": "object"},
    list: {"type": "array"},
    Any: {},
}


def schema_for(fn: Callable[..., Any], arg_docs: dict[str, str] | None = None) -> dict[str, Any]:
    """The arguments object's JSON schema: properties from the hints, required = no default."""
    arg_docs = arg_docs or {}
    hints = typing.get_type_hints(fn)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, param in inspect.signature(fn).parameters.items():
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise TypeError(f"tool {fn.__name__}: *args/**kwargs cannot be described to a model")
        prop = type_schema(hints.get(name, Any))
        if arg_docs.get(name):
            prop["description"] = arg_docs[name]
        if param.default is inspect.Parameter.empty:
            required.append(name)
        elif param.default is not None:
            prop["default"] = param.default if not isinstance(param.default, Path) else str(param.default)
        properties[name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def type_schema(hint: Any) -> dict[str, Any]:
    if hint in _SIMPLE:
        return dict(_SIMPLE[hint])
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        values = list(args)
        kinds = {type(v) for v in values}
        schema: dict[str, Any] = {"enum": values}
        if len(kinds) == 1 and next(iter(kinds)) in _SIMPLE:
            schema = {**_SIMPLE[next(iter(kinds))], **schema}
        return schema
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:  # Optional[X]: the default (None) covers the missing case
            return type_schema(members[0])
        return {"anyOf": [type_schema(a) for a in members]}
    if origin in (list, tuple, set, frozenset) or origin is typing.Sequence:
        item = args[0] if args else Any
        schema = {"type": "array"}
        if item is not Ellipsis and item is not Any:
            schema["items"] = type_schema(item)
        return schema
    if origin is dict:
        schema = {"type": "object"}
        if len(args) == 2 and args[1] is not Any:
            schema["additionalProperties"] = type_schema(args[1])
        return schema
    # Anything else (a pydantic model, an enum …): pydantic knows how; drop its titles.
    from pydantic import TypeAdapter

    return _drop_titles(TypeAdapter(hint).json_schema())


def _drop_titles(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_titles(v) for k, v in value.items() if k != "title"}
    if isinstance(value, list):
        return [_drop_titles(v) for v in value]
    return value


def _as_text(result: Any) -> str:
    if result is None:
        text = "Done (no output)."
    elif isinstance(result, str):
        text = result
    else:
        try:
            text = json.dumps(result, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = str(result)
    if len(text) > MAX_RESULT_CHARS:
        text = (
            text[:MAX_RESULT_CHARS]
            + f"\n[cut: the result had {len(text)} characters, showing the first {MAX_RESULT_CHARS}]"
        )
    return text
