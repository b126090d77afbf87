"""Tool calls for models whose chat template has no tool syntax (the embedded SmolLM2's has none).

The tool schemas go into the system prompt, and the reply is constrained by a grammar built from
a JSON schema: either ``{"tool": NAME, "arguments": {...}}`` whose arguments match that tool's
parameter schema, or (with ``tool_choice="auto"``) ``{"answer": "..."}``. The arguments therefore
always validate. Earlier tool calls and results in the conversation are rewritten into that same
form so the model sees a consistent history.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from internlocal.server.openai_schema import APIError, ChatCompletionRequest, ToolSpec


def allowed_tools(request: ChatCompletionRequest) -> tuple[list[ToolSpec], bool]:
    """The tools the model may call, and whether it may answer without calling one."""
    tools = request.tools or []
    choice = request.tool_choice if request.tool_choice is not None else "auto"
    if choice == "none" or not tools:
        return [], True
    if choice == "auto":
        return tools, True
    if choice == "required":
        return tools, False
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        picked = [t for t in tools if t.function.name == name]
        if not picked:
            raise APIError(400, f"tool_choice names {name!r}, which is not in tools.", param="tool_choice")
        return picked, False
    raise APIError(400, f"tool_choice {choice!r} is not one of none, auto, required or a function.", param="tool_choice")


def tool_system_prompt(tools: list[ToolSpec], may_answer: bool) -> str:
    lines = ["You can call these tools:"]
    for tool in tools:
        f = tool.function
        lines.append(f"- {f.name}: {f.description or ''} Arguments (JSON schema): {json.dumps(f.parameters, ensure_ascii=False)}")
    lines.append('To call a tool reply with JSON: {"tool": "<name>", "arguments": {...}}.')
    if may_answer:
        lines.append('To answer without a tool reply with JSON: {"answer": "<your answer>"}.')
    return "\n".join(lines)


def tool_response_format(tools: list[ToolSpec], may_answer: bool) -> dict[str, Any]:
    options: list[dict[str, Any]] = [
        {"type": "object", "properties": {"tool": {"const": t.function.name}, "arguments": t.function.parameters or {"type": "object"}},
         "required": ["tool", "arguments"], "additionalProperties": False}
        for t in tools
    ]
    if may_answer:
        options.append({"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
                        "additionalProperties": False})
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}


def parse_tool_reply(text: str) -> tuple[str | None, list[dict[str, Any]] | None]:
    """(content, tool_calls) from a grammar-constrained reply."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text, None  # cut at max_tokens before the JSON closed: hand back what there is
    if isinstance(data, dict) and "tool" in data:
        call = {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                "function": {"name": data["tool"], "arguments": json.dumps(data.get("arguments", {}), ensure_ascii=False)}}
        return None, [call]
    if isinstance(data, dict) and "answer" in data:
        return str(data["answer"]), None
    return text, None


def flatten_history(request: ChatCompletionRequest) -> list[dict[str, Any]]:
    """OpenAI messages → plain role/content messages any chat template accepts."""
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for m in request.messages:
        role = "system" if m.role == "developer" else m.role
        if m.role == "assistant" and m.tool_calls:
            calls = []
            for call in m.tool_calls:
                fn = call.get("function", {})
                names[call.get("id", "")] = fn.get("name", "")
                try:
                    arguments = json.loads(fn.get("arguments") or "{}")
                except json.JSONDecodeError:
                    arguments = fn.get("arguments")
                calls.append({"tool": fn.get("name"), "arguments": arguments})
            out.append({"role": "assistant", "content": json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)})
        elif m.role == "tool":
            name = names.get(m.tool_call_id or "", m.name or "the tool")
            out.append({"role": "user", "content": f"Result of {name}: {m.text()}"})
        else:
            out.append({"role": role, "content": m.text()})
    return out
