"""``internlocal serve [MODEL]``: an OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from internlocal.cli.common import services
from internlocal.i18n import _


def serve(
    model: Annotated[
        str | None, typer.Argument(help=_("Catalog GGUF model (default: the embedded chat model)."))
    ] = None,
    host: Annotated[str, typer.Option(help=_("Address to bind; anything but loopback needs --api-key."))] = "127.0.0.1",
    port: Annotated[int, typer.Option(help=_("Port."))] = 8000,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="INTERNLOCAL_API_KEY", help=_("Required bearer token."))
    ] = None,
    slots: Annotated[int, typer.Option(help=_("Requests decoded together (batched); each gets its own context."))] = 4,
    ctx: Annotated[int | None, typer.Option("--ctx", help=_("Context length per slot."))] = None,
    max_queue: Annotated[
        int, typer.Option("--max-queue", help=_("Requests waiting beyond busy slots before 503."))
    ] = 16,
    max_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-tokens", min=1, help=_("Most tokens one request may generate (default: the context length).")
        ),
    ] = None,
    prompt_cache_mb: Annotated[
        int,
        typer.Option(
            "--prompt-cache-mb",
            min=0,
            help=_("Host memory for prompts' KV that left the slots, reused later (0: off)."),
        ),
    ] = 256,
    repetition_stop: Annotated[
        bool,
        typer.Option(
            "--repetition-stop/--no-repetition-stop",
            help=_(
                "End generations that repeat themselves (finish_reason stop, stop_reason repetition); "
                "turn off to let evaluation harnesses see every generation run to its limit."
            ),
        ),
    ] = True,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option("--cors-origin", help=_("A browser origin allowed to call the API (repeatable; none: CORS off).")),
    ] = None,
    max_models: Annotated[
        int,
        typer.Option(
            "--max-models",
            min=1,
            help=_(
                "Catalog models loaded at once (a request may name any); the least recently "
                "used is unloaded for another."
            ),
        ),
    ] = 3,
    models_memory_mb: Annotated[
        int | None,
        typer.Option(
            "--models-memory-mb", min=1, help=_("Memory the loaded models may hold together (default: what is free).")
        ),
    ] = None,
    keep_alive: Annotated[
        str,
        typer.Option(
            "--keep-alive", help=_("How long a model stays loaded after its last request (5m, 1h; -1: always).")
        ),
    ] = "5m",
    allow_image_urls: Annotated[
        bool,
        typer.Option(
            "--allow-image-urls", help=_("Fetch http(s) image URLs in chat requests (default: data: URIs only).")
        ),
    ] = False,
    allow_image_folder: Annotated[
        list[Path] | None,
        typer.Option("--allow-image-folder", help=_("A folder file:// image URLs may be read from (repeatable).")),
    ] = None,
) -> None:
    # its --help is where main.py registers it
    from internlocal import i18n
    from internlocal.server.serve import ServeOptions
    from internlocal.server.serve import serve as run

    # the person reads these two lines in their language; the server's answers are read by programs (OpenAI
    # and Ollama clients match their messages), so from here on everything, errors included, is English
    serving, trying = _("serving {name} at {url}/v1  (Ctrl-C stops)"), _("try: {command}")
    i18n.set_language(i18n.DEFAULT_LANGUAGE)

    def ready(url: str, name: str) -> None:
        typer.echo(serving.format(name=name, url=url))
        # the variable's name, never the key itself: logs (a container's too) keep this line
        auth = ' -H "Authorization: Bearer $INTERNLOCAL_API_KEY"' if api_key else ""
        command = (
            f"curl {url}/v1/chat/completions{auth} -H 'Content-Type: application/json' "
            f'-d \'{{"model": "{name}", "messages": [{{"role": "user", "content": "Hello"}}]}}\''
        )
        typer.echo(trying.format(command=command))

    run(
        ServeOptions(
            model=model,
            host=host,
            port=port,
            api_key=api_key,
            slots=slots,
            context_length=ctx,
            max_queue=max_queue,
            max_tokens=max_tokens,
            prompt_cache_mb=prompt_cache_mb,
            stop_on_repetition=repetition_stop,
            cors_origins=tuple(cors_origin or ()),
            max_models=max_models,
            models_memory_mb=models_memory_mb,
            keep_alive=keep_alive,
            allow_image_urls=allow_image_urls,
            image_folders=tuple(allow_image_folder or ()),
        ),
        services(),
        on_ready=ready,
    )
