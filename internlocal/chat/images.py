"""Images attached to chat messages: read from the user's files, made ready, stored by content.

A picture is prepared once when attached (EXIF orientation applied, scaled to at most
``DEFAULT_MAX_SIDE``, metadata stripped by re-encoding: ``engines/images.prepare_image``) and stored as
``<home>/images/<sha256[:2]>/<sha256>``, so the same picture in several messages or chats is one file.
The catalog's ``chat_image`` rows say which message shows which picture; deleting a chat frees the
files no other message names.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from internlocal.catalog.schema import ChatImage
from internlocal.engines.images import MAX_IMAGE_BYTES, ImageError, PreparedImage, data_uri, prepare_image
from internlocal.errors import UserError
from internlocal.i18n import _

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def read_image_file(path: str | Path) -> tuple[str, bytes]:
    """(file name, bytes) of an image file a user named; one sentence for a missing, huge or non-image file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(_("There is no image file {path}.").format(path=path))
    size = path.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise ImageError(
            _("{name} is {size} MiB; images up to {limit} MiB can be attached.").format(
                name=path.name, size=size >> 20, limit=MAX_IMAGE_BYTES >> 20
            )
        )
    return path.name, path.read_bytes()


def looks_like_image_path(text: str) -> Path | None:
    """The path when ``text`` is a single existing image file's path (pasted or dropped into the prompt), with
    quotes and a ``file://`` prefix as terminals paste them; else None."""
    candidate = text.strip().strip("'\"")
    if candidate.startswith("file://"):
        from urllib.parse import unquote, urlparse

        candidate = unquote(urlparse(candidate).path)
    candidate = candidate.replace("\\ ", " ")  # a dropped path with escaped spaces
    if not candidate or "\n" in candidate or not candidate.lower().endswith(IMAGE_SUFFIXES):
        return None
    path = Path(candidate).expanduser()
    return path if path.is_file() else None


class ImageStore:
    """The image files under ``<home>/images``, named by the sha256 of their prepared bytes."""

    def __init__(self, home: Path):
        self.root = Path(home) / "images"

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def put(self, name: str, data: bytes) -> ChatImage:
        """Prepare ``data`` and store it (once per content); returns the row to attach to a message."""
        prepared: PreparedImage = prepare_image(data)
        sha = hashlib.sha256(prepared.data).hexdigest()
        target = self.path(sha)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f"{sha}.partial-{os.getpid()}-{threading.get_ident()}")
            try:
                partial.write_bytes(prepared.data)
                partial.replace(target)  # readers never see half a file
            finally:
                partial.unlink(missing_ok=True)
        return ChatImage(
            message_id=0,
            position=0,
            sha256=sha,
            mime=prepared.mime,
            width=prepared.width,
            height=prepared.height,
            size_bytes=len(prepared.data),
            name=name,
        )

    def read(self, image: ChatImage) -> bytes | None:
        """The stored bytes, or None when the file is gone (a data directory restored without its images)."""
        try:
            return self.path(image.sha256).read_bytes()
        except FileNotFoundError:
            return None

    def part(self, image: ChatImage) -> dict | None:
        """The OpenAI content part for a stored image (None when its file is gone)."""
        data = self.read(image)
        return None if data is None else {"type": "image_url", "image_url": {"url": data_uri(data, image.mime)}}

    def free(self, shas: Iterable[str]) -> int:
        """Delete the files of ``shas`` (no message names them any more); returns how many went."""
        gone = 0
        for sha in shas:
            try:
                self.path(sha).unlink()
                gone += 1
            except FileNotFoundError:
                pass
        return gone
