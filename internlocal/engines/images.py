"""Images in chat messages: OpenAI ``image_url`` content parts, read, checked and made ready for a model.

Every front end and engine speaks OpenAI's message shape; an image is a content part
``{"type": "image_url", "image_url": {"url": "data:image/png;base64,…"}}``. By the time a message reaches
an engine its images are ``data:`` URIs (the server fetches or refuses anything else, the TUI and CLI read
files), so engines only decode. Pillow does the reading: EXIF orientation is applied, and an image is
scaled down to the model's input size before it costs tokens.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from internlocal.errors import UserError
from internlocal.i18n import _

# what a front end accepts before anything is decoded (the server answers 413/400 with these)
MAX_IMAGE_BYTES = 20 << 20
MAX_IMAGE_PIXELS = 40_000_000  # decompression bombs: a 1 MB PNG can claim 100k × 100k pixels
# the longest side an image is stored and sent at unless the model asks for less; vision encoders
# tile or resize to a few hundred pixels, so more only costs time
DEFAULT_MAX_SIDE = 1536

_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?)(?P<b64>;base64)?,", re.I)


class ImageError(UserError):
    """An image that cannot be used: unreadable, too large, or too many pixels; ``status`` is the HTTP answer."""

    def __init__(self, message: str, *, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PreparedImage:
    """An image made ready: re-encoded bytes (PNG, or JPEG for photos), its size, and where it came from."""

    data: bytes
    mime: str
    width: int
    height: int

    @property
    def data_uri(self) -> str:
        return data_uri(self.data, self.mime)


def is_image_part(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") in ("image_url", "input_image")


def part_url(part: dict[str, Any]) -> str:
    """The URL of an image part (OpenAI's ``image_url`` is an object with ``url``, or a bare string)."""
    value = part.get("image_url")
    if isinstance(value, dict):
        value = value.get("url")
    if not isinstance(value, str) or not value:
        raise ImageError(_("An image_url content part has no url."))
    return value


def has_images(messages: Sequence[dict[str, Any]]) -> bool:
    return any(isinstance(m.get("content"), list) and any(is_image_part(p) for p in m["content"]) for m in messages)


def message_images(messages: Sequence[dict[str, Any]]) -> list[bytes]:
    """Every image of ``messages`` in order, decoded from its ``data:`` URI."""
    return [
        decode_data_uri(part_url(part))
        for m in messages
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if is_image_part(part)
    ]


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content)


def with_markers(messages: Sequence[dict[str, Any]], marker: str) -> list[dict[str, Any]]:
    """``messages`` with string content only, each image part replaced by ``marker`` where it stood.

    Chat templates of GGUF files expect string content; llama.cpp's multimodal library then finds the
    markers in the rendered prompt and puts each image's tokens there.
    """
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            pieces = [marker if is_image_part(p) else p.get("text", "") for p in content if isinstance(p, dict)]
            m = {**m, "content": "".join(pieces)}
        out.append(m)
    return out


def text_only(messages: Sequence[dict[str, Any]], model_name: str) -> list[dict[str, Any]]:
    """``messages`` with list content joined into strings, for a model that reads text only.

    An image is refused in one sentence, never dropped: the model would answer as if it had seen it.
    """
    from internlocal.errors import Unsupported

    if has_images(messages):
        raise Unsupported(
            _(
                "{model} reads text only and cannot see images; choose a vision model "
                "(`internlocal models list` marks them) or send the message without the image."
            ).format(model=model_name),
            field="messages",
        )
    return [{**m, "content": content_text(m["content"])} if isinstance(m.get("content"), list) else m for m in messages]


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def decode_data_uri(url: str, *, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The bytes of a ``data:`` URI; anything else (http, file) must have been fetched by the front end."""
    match = _DATA_URI.match(url)
    if match is None:
        scheme = url.split(":", 1)[0] if ":" in url else url[:20]
        raise ImageError(_("Images must be sent as data: URIs here, not {scheme}: URLs.").format(scheme=scheme))
    body = url[match.end() :]
    if len(body) * 3 // 4 > max_bytes:
        raise ImageError(
            _("The image is larger than {size} MiB; send a smaller one.").format(size=max_bytes >> 20), status=413
        )
    if not match.group("b64"):
        from urllib.parse import unquote_to_bytes

        return unquote_to_bytes(body)
    try:
        return base64.b64decode(body, validate=False)
    except (binascii.Error, ValueError):
        raise ImageError(_("The image's data: URI is not valid base64.")) from None


def _opened(data: bytes, max_pixels: int):
    """``Image.open`` (the header only) with the size checked before any pixel is decoded; Pillow's own bomb
    warning and error become the same 413 sentence instead of noise or a traceback."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(
            _("The image is larger than {size} MiB; send a smaller one.").format(size=MAX_IMAGE_BYTES >> 20),
            status=413,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(_("That file is not an image Pillow can read (PNG, JPEG, WebP, GIF, BMP …).")) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(_("The image has far too many pixels; scale it down."), status=413) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(_("The image could not be read ({error}).").format(error=exc)) from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            _("The image has {width}×{height} pixels, more than the {limit:,} allowed; scale it down.").format(
                width=width, height=height, limit=max_pixels
            ),
            status=413,
        )
    return image


def open_image(data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS):
    """A Pillow image, upright (EXIF orientation applied) and in RGB; a clear error for anything unreadable."""
    from PIL import Image, ImageOps

    image = _opened(data, max_pixels)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(_("The image could not be read ({error}).").format(error=exc)) from None
    upright: Image.Image = ImageOps.exif_transpose(image)
    if upright.mode == "RGB":
        return upright
    if upright.mode in ("RGBA", "LA", "P"):  # transparent pixels become white, not black
        rgba = upright.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, "white")
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return upright.convert("RGB")


def prepare_image(
    data: bytes, *, max_side: int = DEFAULT_MAX_SIDE, max_pixels: int = MAX_IMAGE_PIXELS
) -> PreparedImage:
    """The image upright, in RGB, its longest side at most ``max_side``, re-encoded (PNG; JPEG if that is smaller).

    Re-encoding also strips metadata (EXIF location) before the image is stored or sent.
    """
    from PIL import Image

    image = open_image(data, max_pixels=max_pixels)
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    png = io.BytesIO()
    image.save(png, format="PNG", optimize=False)
    best, mime = png.getvalue(), "image/png"
    if len(best) > 256 << 10:  # photos compress far better as JPEG; drawings and screenshots stay PNG
        jpeg = io.BytesIO()
        image.save(jpeg, format="JPEG", quality=92)
        if len(jpeg.getvalue()) < len(best):
            best, mime = jpeg.getvalue(), "image/jpeg"
    return PreparedImage(best, mime, image.width, image.height)


def fit_image(data: bytes, *, max_side: int = DEFAULT_MAX_SIDE, max_pixels: int = MAX_IMAGE_PIXELS) -> PreparedImage:
    """``prepare_image``, except that an opaque RGB or grey JPEG, or a PNG without EXIF, already small enough is
    passed on as it is, from its header alone (re-encoding a photo costs tens of milliseconds of time to first
    token). Anything else (EXIF orientation, transparency, palettes, other formats, too large) is prepared."""
    with _opened(data, max_pixels) as image:
        kind, mode, (width, height) = image.format, image.mode, image.size
        # a JPEG's EXIF is in its header (no pixel decoded to read it); a PNG's may follow its pixels: not read
        jpeg_upright = kind == "JPEG" and image.getexif().get(0x0112, 1) == 1
        upright = jpeg_upright or (kind == "PNG" and "exif" not in image.info)
    if upright and mode in ("RGB", "L") and max(width, height) <= max_side:
        return PreparedImage(data, f"image/{str(kind).lower()}", width, height)
    return prepare_image(data, max_side=max_side, max_pixels=max_pixels)


def image_part(image: PreparedImage) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": image.data_uri}}
