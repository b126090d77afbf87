"""Image content parts of a chat request, made ready before any engine sees them.

OpenAI clients send images as ``image_url`` parts: a ``data:`` URI, or a URL. ``data:`` is always
accepted. ``http(s)://`` is fetched only when the server was started with ``--allow-image-urls``, and
``file://`` only inside the folders named by ``--allow-image-folder`` (a server reachable by others must
not read this machine's files or reach its network on a client's say). Each image is checked (size,
pixels, readable) and re-encoded upright and scaled (``engines/images.prepare_image``); a refusal is a
400 or 413 with one sentence naming the message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from internlocal.engines.images import (
    MAX_IMAGE_BYTES,
    ImageError,
    decode_data_uri,
    fit_image,
    image_part,
    is_image_part,
    part_url,
)
from internlocal.server.openai_schema import APIError

FETCH_TIMEOUT_S = 20.0


def resolve_content(content: Any, config, *, where: str) -> Any:
    """A message's content with every image part as a checked ``data:`` URI; text parts as they are."""
    if not isinstance(content, list):
        return content if content is not None else ""  # an assistant turn that only called tools
    out = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            out.append({"type": "text", "text": str(part.get("text", ""))})
        elif is_image_part(part):
            try:
                data = _image_bytes(part_url(part), config)
                out.append(image_part(fit_image(data)))
            except ImageError as exc:
                raise APIError(exc.status, f"{where}: {exc}", param="messages") from None
        else:
            raise APIError(
                400, f"{where}: content part type {kind!r} is not supported; send text or image_url.", param="messages"
            )
    return out


def _image_bytes(url: str, config) -> bytes:
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        return decode_data_uri(url)
    if scheme in ("http", "https"):
        if not config.allow_image_urls:
            raise ImageError(
                "image URLs are not fetched by this server (start it with --allow-image-urls); send a data: URI."
            )
        return _fetch(url)
    if scheme == "file":
        return _read_file(url, config.image_folders)
    raise ImageError(f"an image_url must be a data: URI (or an http(s) or file URL), not {scheme or url[:16]!r}.")


def _fetch(url: str) -> bytes:
    """The image at ``url``: redirects are not followed (each hop would need checking again), and the whole
    download has one deadline (a per-read timeout alone lets a slow server hold the request for ever)."""
    import time

    import requests

    deadline = time.monotonic() + FETCH_TIMEOUT_S
    try:
        with requests.get(url, stream=True, timeout=FETCH_TIMEOUT_S, allow_redirects=False) as response:
            if response.is_redirect:
                raise ImageError("the image URL redirects elsewhere; give the final URL.")
            if response.status_code != 200:
                raise ImageError(f"fetching the image answered HTTP {response.status_code}.")
            data = bytearray()
            for block in response.iter_content(1 << 16):
                data += block
                if len(data) > MAX_IMAGE_BYTES:
                    raise ImageError(f"the image is larger than {MAX_IMAGE_BYTES >> 20} MiB.", status=413)
                if time.monotonic() > deadline:
                    raise ImageError(f"the image took longer than {FETCH_TIMEOUT_S:.0f} s to download.")
            return bytes(data)
    except requests.RequestException as exc:
        raise ImageError(f"the image could not be fetched ({type(exc).__name__}).") from None


def _read_file(url: str, folders: list[Path]) -> bytes:
    if not folders:
        raise ImageError("file: image URLs are not read by this server (start it with --allow-image-folder DIR).")
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise ImageError("a file: image URL must name a local path (file:///…).")
    try:
        path = Path(unquote(parsed.path)).resolve()  # symlinks and .. resolved before the folder check
        if not any(path.is_relative_to(folder.resolve()) for folder in folders):
            raise ImageError("that file is outside the folders this server may read images from.")
        if not path.is_file():
            raise ImageError(f"there is no file {path.name} in the allowed folders.")
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise ImageError(f"the image is larger than {MAX_IMAGE_BYTES >> 20} MiB.", status=413)
        return path.read_bytes()
    except (OSError, ValueError) as exc:  # a NUL in the path, no permission
        raise ImageError(f"that file cannot be read ({type(exc).__name__}).") from None
