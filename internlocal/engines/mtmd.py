"""A GGUF vision model's projector through llama.cpp's multimodal library (mtmd, bound by llama-cpp-python).

A vision GGUF is two files: the language model and its projector (``mmproj``: the vision encoder and the
layer that maps its output into the model's embedding space). ``Projector`` loads the projector beside a
loaded model and turns a rendered prompt with image markers plus the images into a ``MediaPrompt``:
text tokens and image chunks in order. ``evaluate`` puts the chunks up to the last image into any
sequence of any llama.cpp context on that model, so the one-at-a-time engine (``llamacpp.py``) and the
batched server engine (``llamacpp_batched.py``) share it; the prompt's trailing text is left to the
caller, which decodes it the usual way and takes its logits from there.

``MediaPrompt.tokens`` stands for the whole prompt as the engines' prefix caches see it: text tokens
as they are, each image position as a negative number drawn from the image's sha256, so no text prompt
can ever match KV computed from an image.
"""

from __future__ import annotations

import ctypes
import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from internlocal.engines.images import DEFAULT_MAX_SIDE
from internlocal.errors import ContextOverflow, ModelFileError, UserError
from internlocal.i18n import _


@dataclass
class MediaChunk:
    kind: str  # "text" | "image"
    n_tokens: int
    tokens: list[int]  # the text's tokens, or the image's placeholder ids
    handle: Any  # the mtmd chunk (owned by the MediaPrompt's chunk list)


@dataclass
class MediaPrompt:
    """A tokenized prompt with images; ``close()`` frees llama.cpp's chunk list."""

    chunks: list[MediaChunk]
    _handle: Any = None
    _owner: Any = field(default=None, repr=False)

    @property
    def tokens(self) -> list[int]:
        return [t for chunk in self.chunks for t in chunk.tokens]

    @property
    def image_tokens(self) -> int:
        return sum(c.n_tokens for c in self.chunks if c.kind == "image")

    @property
    def head(self) -> list[MediaChunk]:
        """The chunks up to and including the last image (``Projector.evaluate`` decodes them)."""
        last = max((i for i, c in enumerate(self.chunks) if c.kind == "image"), default=-1)
        return self.chunks[: last + 1]

    @property
    def tail(self) -> list[int]:
        """The text tokens after the last image: the caller decodes them and samples from the last one."""
        return [t for c in self.chunks[len(self.head) :] for t in c.tokens]

    def close(self) -> None:
        if self._handle is not None:
            self._owner.lib.mtmd_input_chunks_free(self._handle)
            self._handle = None

    def __del__(self) -> None:
        self.close()


def placeholder_ids(key: str, n: int) -> list[int]:
    """``n`` negative ids standing for one image chunk's positions: equal for the same tile of the same image,
    never a real token."""
    base = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") & 0x3FFFFFFF
    return [-(base + 1)] * n


class Projector:
    """An mmproj file loaded for one llama.cpp model; tokenizing and encoding are serialized by one lock."""

    def __init__(
        self, path: str | Path, model: Any, *, n_threads: int, use_gpu: bool = False, flash_attn: bool = False
    ):
        import llama_cpp
        import llama_cpp.mtmd_cpp as lib
        from llama_cpp._logger import llama_log_callback

        from internlocal.hub.inspect import read_gguf

        self.lock = threading.Lock()
        self._ctx = None
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(
                _("The projector file {path} is gone; pull or import the model again.").format(path=path)
            )
        info = read_gguf(path)
        if (info.architecture or "").lower() != "clip":
            raise ModelFileError(
                _("{name} is not a projector (mmproj) file; its architecture is {architecture}.").format(
                    name=path.name, architecture=info.architecture
                )
            )
        self.lib = lib
        self.path = path
        # what mtmd scales an image to before tiling it (idefics3/SmolVLM: preproc_image_size): larger only costs
        # time. Projectors that tile by the image's own size (InternVL, llava-uhd) say no such size: scaling to
        # their tile (clip.vision.image_size) would leave one tile and lose the detail, so they get the default.
        side = info.metadata.get("clip.vision.preproc_image_size")
        self.max_side = int(side) if isinstance(side, int) and side > 0 else DEFAULT_MAX_SIDE
        # llama-cpp-python's callback prints only at its logger's verbose level: quiet unless --verbose
        lib.mtmd_log_set(llama_log_callback, ctypes.c_void_p(0))
        lib.mtmd_helper_log_set(llama_log_callback, ctypes.c_void_p(0))
        params = lib.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.print_timings = False
        params.n_threads = n_threads
        params.warmup = False
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        self._ctx = lib.mtmd_init_from_file(str(path).encode(), model, params)
        if not self._ctx:
            raise ModelFileError(
                _(
                    "llama.cpp could not load the projector {name} for this model; it may belong to another "
                    "model or be corrupt."
                ).format(name=path.name)
            )
        if not lib.mtmd_support_vision(self._ctx):
            lib.mtmd_free(self._ctx)
            self._ctx = None
            raise ModelFileError(
                _("{name} is a projector without vision (audio only); it cannot read images.").format(name=path.name)
            )
        if lib.mtmd_decode_use_mrope(self._ctx):
            # M-RoPE models (Qwen2-VL) give an image fewer positions than tokens; the engines count one per token
            lib.mtmd_free(self._ctx)
            self._ctx = None
            raise UserError(
                _("{name} needs M-RoPE positions (Qwen2-VL style), which internlocal does not run yet.").format(
                    name=path.name
                )
            )
        self.marker = lib.mtmd_default_marker().decode("utf-8")

    def tokenize(self, prompt: str, images: Sequence[bytes]) -> MediaPrompt:
        """``prompt`` (rendered, one marker per image, special tokens already in it) and its images, as chunks."""
        lib = self.lib
        if prompt.count(self.marker) != len(images):
            raise UserError(
                _(
                    "The chat template placed {markers} image markers for {count} images; this model's "
                    "template may not support images."
                ).format(markers=prompt.count(self.marker), count=len(images))
            )
        with self.lock:
            bitmaps = []
            try:
                for data in images:
                    buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
                    bitmap = lib.mtmd_helper_bitmap_init_from_buf(self._ctx, buffer, len(data), False)
                    if not bitmap:
                        raise UserError(_("llama.cpp could not decode an image; send a PNG or JPEG."))
                    bitmaps.append(bitmap)
                    # an image may become several chunks (tiles); each carries its bitmap's id
                    lib.mtmd_bitmap_set_id(bitmap, hashlib.sha256(data).hexdigest().encode())
                text = lib.mtmd_input_text()
                raw = prompt.encode("utf-8")
                text.text = raw
                text.text_len = len(raw)
                text.add_special = False  # the chat template already put BOS where the model wants it
                text.parse_special = True
                handle = lib.mtmd_input_chunks_init()
                array = (lib.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
                code = lib.mtmd_tokenize(self._ctx, handle, ctypes.byref(text), array, len(bitmaps))
                if code != 0:
                    lib.mtmd_input_chunks_free(handle)
                    raise UserError(
                        _("llama.cpp could not tokenize the prompt with its images (code {code}).").format(code=code)
                    )
            finally:
                for bitmap in bitmaps:
                    lib.mtmd_bitmap_free(bitmap)
            chunks: list[MediaChunk] = []
            tiles: dict[str, int] = {}  # image id → chunks of it seen so far
            for i in range(lib.mtmd_input_chunks_size(handle)):
                chunk = lib.mtmd_input_chunks_get(handle, i)
                kind = lib.mtmd_input_chunk_get_type(chunk)
                if kind == lib.MTMD_INPUT_CHUNK_TYPE_TEXT:
                    count = ctypes.c_size_t()
                    pointer = lib.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                    tokens = [pointer[j] for j in range(count.value)]
                    chunks.append(MediaChunk("text", len(tokens), tokens, chunk))
                else:
                    n = lib.mtmd_input_chunk_get_n_tokens(chunk)
                    ident = (lib.mtmd_input_chunk_get_id(chunk) or b"").decode()
                    tiles[ident] = tiles.get(ident, -1) + 1
                    chunks.append(MediaChunk("image", n, placeholder_ids(f"{ident}/{tiles[ident]}", n), chunk))
        return MediaPrompt(chunks, handle, self)

    def evaluate(self, context: Any, prompt: MediaPrompt, *, seq: int, n_batch: int, limit: int) -> int:
        """Decode ``prompt.head`` (text and images up to the last image) into sequence ``seq`` of ``context``
        from position 0; returns the next position. The sequence must be empty from 0 on."""
        import llama_cpp

        lib = self.lib
        needed = len(prompt.tokens)
        if needed >= limit:
            raise ContextOverflow(
                _(
                    "The message with its images is {needed} tokens but the context holds {limit}; send fewer "
                    "or smaller images, or raise the context length."
                ).format(needed=needed, limit=limit)
            )
        position = 0
        with self.lock:
            for chunk in prompt.head:
                new_position = llama_cpp.llama_pos(position)  # the text path adds its tokens to this value
                code = lib.mtmd_helper_eval_chunk_single(
                    self._ctx, context, chunk.handle, position, seq, n_batch, False, ctypes.byref(new_position)
                )
                if code != 0:
                    raise UserError(
                        _("llama.cpp could not evaluate an image (code {code}); the context may be full.").format(
                            code=code
                        )
                    )
                position = new_position.value
        return position

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            with self.lock:  # not while another thread tokenizes or encodes with it
                self.lib.mtmd_free(self._ctx)
                self._ctx = None
