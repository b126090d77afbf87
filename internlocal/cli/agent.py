"""``internlocal agent "question"``: answer with tools, printing every step as it happens."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from internlocal.cli.common import services
from internlocal.i18n import _


def agent(
    question: Annotated[
        str | None, typer.Argument(help=_("The question; read from stdin when omitted or '-'."))
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help=_("Catalog model name (default: the embedded chat model)."))
    ] = None,
    kb: Annotated[
        str | None, typer.Option("--kb", help=_("Knowledge base the agent may search (kb_search tool)."))
    ] = None,
    files: Annotated[
        list[Path] | None, typer.Option("--files", help=_("Folder the agent may read files from (repeatable)."))
    ] = None,
    allow_python: Annotated[
        bool,
        typer.Option(
            "--allow-python",
            help=_(
                "Let the agent run Python without asking for each call: in a sandboxed subprocess (bubblewrap where "
                "installed: only a scratch folder, no network; limited time and memory)."
            ),
        ),
    ] = False,
    max_steps: Annotated[
        int, typer.Option("--max-steps", min=1, max=50, help=_("Most tool calls before a final answer."))
    ] = 6,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help=_("Most tokens per model reply."))] = None,
    as_json: Annotated[bool, typer.Option("--json", help=_("One JSON object per step (JSON lines)."))] = False,
) -> None:
    # its --help is where main.py registers it
    from internlocal.agent.builtin import default_tools, kb_search_tool, python_tool, read_file_tool
    from internlocal.agent.loop import DEFAULT_MAX_TOKENS, Agent
    from internlocal.engines.base import GenerationParams
    from internlocal.errors import UserError

    if question is None or question == "-":
        question = sys.stdin.read()
    question = question.strip()
    if not question:
        raise UserError(_("The question is empty; type something to ask."))
    svc = services()
    tools = default_tools()
    if kb:
        # A knowledge base goes first: a question asked with --kb is mostly about the documents,
        # and small models lean to the first tool listed.
        tools.insert(0, kb_search_tool(_kb_search(svc, kb)))
    if files:
        tools.append(read_file_tool(files))
    if allow_python:
        from internlocal.agent.sandbox import isolation

        tools.append(python_tool())
        if note := isolation().note:  # once, before anything runs: the user chose a weaker sandbox than they think
            typer.secho(_("note: {note}").format(note=note), err=True, fg=typer.colors.YELLOW)
    model_row = svc.catalog.get_model(model) if model else svc.chats.default_model()
    engine = svc.chats.engines.get(model_row)
    params = GenerationParams.greedy(max_tokens=max_tokens or DEFAULT_MAX_TOKENS)
    # --allow-python is the user's consent to every python call (the CLI has nobody to ask mid-run); tools that
    # act and were not enabled by a flag are never called
    runner = Agent(engine, tools, max_steps=max_steps, params=params, confirm=lambda _name, _args: allow_python)
    try:
        for step in runner.run(question):
            if as_json:
                sys.stdout.write(json.dumps(step.to_dict(), ensure_ascii=False) + "\n")
            else:
                sys.stdout.write(_show(step) + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        runner.cancel()
        raise


def _kb_search(svc, name: str):
    from internlocal.errors import UserError

    try:
        from internlocal.kb.library import open_index
    except ImportError:
        raise UserError(
            _(
                "Knowledge bases are not available in this installation (the internlocal.kb package "
                "cannot be imported); run without --kb."
            )
        ) from None
    index = open_index(svc.catalog, name)

    def search(query: str, k: int):
        return index.search(query, k=k)

    return search


def _show(step) -> str:
    if step.kind == "tool_call":
        args = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in (step.arguments or {}).items())
        return f"→ {step.name}({args})"
    if step.kind == "tool_result":
        body = step.content if len(step.content) <= 600 else step.content[:600] + " …"
        return "  " + body.replace("\n", "\n  ")
    if step.kind == "stopped":
        return _("stopped: {reason}").format(reason=step.content)
    if step.finish_reason == "repetition":
        from internlocal.engines.base import REPETITION_NOTE

        return f"{step.content}\n({_(REPETITION_NOTE)})"
    return step.content
