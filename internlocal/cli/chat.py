"""``internlocal chat "question"``: one answer, streamed to stdout, for scripts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from internlocal.cli.common import print_json, services
from internlocal.i18n import _

if TYPE_CHECKING:
    from internlocal.chat.service import Reply
    from internlocal.engines.base import Generation


def chat(
    prompt: Annotated[str | None, typer.Argument(help=_("The question; read from stdin when omitted or '-'."))] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help=_("Catalog model name (default: the embedded chat model)."))
    ] = None,
    system: Annotated[str | None, typer.Option("--system", help=_("System prompt."))] = None,
    temperature: Annotated[float | None, typer.Option(help=_("0 = greedy."))] = None,
    top_p: Annotated[float | None, typer.Option("--top-p")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k")] = None,
    repeat_penalty: Annotated[float | None, typer.Option("--repeat-penalty")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens")] = None,
    seed: Annotated[int | None, typer.Option(help=_("Fixed seed for reproducible sampling."))] = None,
    stop: Annotated[list[str] | None, typer.Option("--stop", help=_("Stop string (repeatable)."))] = None,
    repetition_stop: Annotated[
        bool | None,
        typer.Option(
            "--repetition-stop/--no-repetition-stop",
            help=_("End an answer that repeats itself (on unless the chat's settings say otherwise)."),
        ),
    ] = None,
    session: Annotated[
        int | None, typer.Option("--session", "-s", help=_("Continue (and save to) this stored chat."))
    ] = None,
    image: Annotated[
        list[Path] | None,
        typer.Option("--image", "-i", help=_("An image the question is about (repeatable; needs a vision model).")),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help=_("Print one JSON object with the answer and its statistics."))
    ] = False,
) -> None:
    # its --help is where main.py registers it
    from internlocal.chat.images import read_image_file
    from internlocal.engines.base import GenerationParams

    if prompt is None or prompt == "-":
        prompt = sys.stdin.read()
    images = [read_image_file(path) for path in image or ()]  # a missing file is refused before any model loads
    svc = services()
    overrides = {
        k: v
        for k, v in dict(
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            repeat_penalty=repeat_penalty,
            max_tokens=max_tokens,
            seed=seed,
            stop=stop,
            stop_on_repetition=repetition_stop,
        ).items()
        if v is not None
    }
    if session is not None:
        if overrides:
            stored = json.loads(svc.catalog.get_chat(session).params_json or "{}")  # what the chat's settings set
            svc.chats.set_params(session, GenerationParams.from_user(**{**stored, **overrides}))
        reply = svc.chats.send(session, prompt, images=images)
        stream: Reply | Generation = reply
        model_name = reply.model.name
    else:
        model_row, stream = svc.chats.ask(prompt, model, system, GenerationParams.from_user(**overrides), images=images)
        model_name = model_row.name
    try:
        for piece in stream:
            if not as_json:
                sys.stdout.write(piece)
                sys.stdout.flush()
    except KeyboardInterrupt:
        stream.cancel()
        raise
    result = stream.result
    assert result is not None  # the stream was read to its end
    if as_json:
        print_json(
            {
                "model": model_name,
                "text": result.text,
                "finish_reason": result.finish_reason,
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "ttft_ms": round(result.ttft_s * 1000, 1) if result.ttft_s is not None else None,
                "tokens_per_s": round(result.decode_tokens_per_s, 2) if result.decode_tokens_per_s else None,
            }
        )
    else:
        sys.stdout.write("\n")
        if result.finish_reason == "repetition":
            from internlocal.engines.base import REPETITION_NOTE

            sys.stderr.write(f"({_(REPETITION_NOTE)})\n")
