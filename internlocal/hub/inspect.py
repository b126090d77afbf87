"""Read what a model file says about itself: GGUF headers and Hugging Face directories.

The GGUF header is parsed here with ``struct`` rather than ``gguf.GGUFReader``: the reader
materialises every tokenizer array element and takes ~3 s on a 135M model; this parser skips
arrays and takes milliseconds. The quantization block sizes come from the ``gguf`` package.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from internlocal.errors import ModelFileError
from internlocal.i18n import _

GGUF_MAGIC = b"GGUF"

# GGUF metadata value types (gguf spec)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass
class ModelFileInfo:
    """What a listing needs to know about a model file, read without loading it."""

    format: str  # gguf | hf
    architecture: str | None = None
    name: str | None = None
    quantization: str | None = None
    parameters: int | None = None
    context_length: int | None = None
    chat_template: str | None = None
    size_bytes: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)


class _Reader:
    def __init__(self, fh: BinaryIO, path: Path):
        self.fh, self.path = fh, path

    def read(self, n: int) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            raise ModelFileError(
                _("{path} ends inside its GGUF header; the file is truncated, download it again.").format(
                    path=self.path
                )
            )
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        length = self.unpack("<Q")
        if length > 1 << 26:
            raise ModelFileError(
                _("{path} has an implausible GGUF string length; the file is corrupt.").format(path=self.path)
            )
        return self.read(length).decode("utf-8", errors="replace")

    def value(self, vtype: int, keep_arrays: bool) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            item_type, count = self.unpack("<I"), self.unpack("<Q")
            if item_type in _SCALARS and not keep_arrays:
                self.fh.seek(struct.calcsize(_SCALARS[item_type]) * count, 1)
                return {"array_len": count}
            items = [self.value(item_type, keep_arrays=False) for __ in range(count)]
            return items if keep_arrays else {"array_len": count}
        raise ModelFileError(
            _("{path} has an unknown GGUF value type {vtype}; the file is corrupt.").format(path=self.path, vtype=vtype)
        )


def read_gguf(path: Path) -> ModelFileInfo:
    """Parse a GGUF header; raise ``ModelFileError`` for a missing, foreign, corrupt or truncated file."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(_("Model file {path} does not exist; import it again or fix the path.").format(path=path))
    size = path.stat().st_size
    with path.open("rb") as fh:
        reader = _Reader(fh, path)
        magic = fh.read(4)
        if magic != GGUF_MAGIC:
            raise ModelFileError(
                _("{path} is not a GGUF file (it starts with {magic!r}); choose a .gguf model file.").format(
                    path=path, magic=magic
                )
            )
        version = reader.unpack("<I")
        if version not in (2, 3):
            raise ModelFileError(
                _("{path} is GGUF version {version}, which is not supported; convert it again.").format(
                    path=path, version=version
                )
            )
        n_tensors, n_kv = reader.unpack("<Q"), reader.unpack("<Q")
        kv: dict[str, Any] = {}
        for __ in range(n_kv):
            key = reader.string()
            vtype = reader.unpack("<I")
            kv[key] = reader.value(vtype, keep_arrays=key == "general.languages")
        tensors = []
        for __ in range(n_tensors):
            name = reader.string()
            n_dims = reader.unpack("<I")
            dims = [reader.unpack("<Q") for __ in range(n_dims)]
            ggml_type, offset = reader.unpack("<I"), reader.unpack("<Q")
            tensors.append((name, dims, ggml_type, offset))
        header_end = fh.tell()

    alignment = int(kv.get("general.alignment", 32))
    data_start = (header_end + alignment - 1) // alignment * alignment
    n_params, data_end = 0, data_start
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    for name, dims, ggml_type, offset in tensors:
        n_elements = 1
        for d in dims:
            n_elements *= d
        n_params += n_elements
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
        except (ValueError, KeyError):
            raise ModelFileError(
                _(
                    "{path} uses tensor type {ggml_type} (in {name}), unknown to this version; update internlocal."
                ).format(path=path, ggml_type=ggml_type, name=name)
            ) from None
        data_end = max(data_end, data_start + offset + n_elements // block * type_size)
    if data_end > size:
        raise ModelFileError(
            _("{path} is truncated ({size} of {data_end} bytes); download or copy it again.").format(
                path=path, size=size, data_end=data_end
            )
        )

    arch = kv.get("general.architecture")
    return ModelFileInfo(
        format="gguf",
        architecture=arch,
        name=kv.get("general.name"),
        quantization=_file_type_name(kv.get("general.file_type")),
        parameters=n_params,
        context_length=kv.get(f"{arch}.context_length"),
        chat_template=kv.get("tokenizer.chat_template"),
        size_bytes=size,
        metadata={k: v for k, v in kv.items() if not isinstance(v, dict) and k != "tokenizer.chat_template"},
    )


def _file_type_name(file_type: int | None) -> str | None:
    if file_type is None:
        return None
    from gguf.constants import LlamaFileType

    try:
        name = LlamaFileType(file_type).name
    except ValueError:
        return f"type{file_type}"
    return name.removeprefix("MOSTLY_").replace("ALL_", "")


def read_hf_dir(path: Path) -> ModelFileInfo:
    """Read a Hugging Face model directory (``config.json`` + safetensors) without loading weights."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelFileError(_("{path} has no config.json; choose a Hugging Face model directory.").format(path=path))
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFileError(
            _("{path} is not valid JSON ({exc}); fix or replace it.").format(path=config_file, exc=exc)
        ) from None
    n_params = 0
    for weights in sorted(path.glob("*.safetensors")):
        n_params += _safetensors_parameters(weights)
    chat_template = None
    tok_config = path / "tokenizer_config.json"
    if tok_config.is_file():
        chat_template = json.loads(tok_config.read_text(encoding="utf-8")).get("chat_template")
    architectures = config.get("architectures") or [config.get("model_type")]
    quant = config.get("quantization_config", {}).get("quant_method") if config.get("quantization_config") else None
    metadata: dict[str, Any] = {k: v for k, v in config.items() if isinstance(v, (str, int, float, bool))}
    sampling = _generation_config_sampling(path / "generation_config.json")
    if sampling:
        metadata["sampling"] = sampling
    if isinstance(config.get("vision_config"), dict):  # Idefics3/SmolVLM, InternVL, Llava…: the folder reads images
        metadata["vision"] = True
    return ModelFileInfo(
        format="hf",
        architecture=architectures[0],
        name=config.get("_name_or_path") or path.name,
        quantization=quant or str(config.get("torch_dtype") or config.get("dtype") or "float32"),
        parameters=n_params or None,
        context_length=config.get("max_position_embeddings"),
        chat_template=chat_template if isinstance(chat_template, str) else None,
        size_bytes=sum(f.stat().st_size for f in path.rglob("*") if f.is_file()),
        metadata=metadata,
    )


# generation_config.json's names → GenerationParams'
_HF_SAMPLING = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
                "repetition_penalty": "repeat_penalty"}  # fmt: skip
# llama.cpp's GGUF keys for the sampling a model's authors recommend (written by convert_hf_to_gguf)
_GGUF_SAMPLING = {"general.sampling.temp": "temperature", "general.sampling.top_p": "top_p",
                  "general.sampling.top_k": "top_k", "general.sampling.min_p": "min_p",
                  "general.sampling.penalty_repeat": "repeat_penalty"}  # fmt: skip


def _generation_config_sampling(path: Path) -> dict[str, Any] | None:
    """The sampling an HF folder's ``generation_config.json`` recommends (when it samples at all)."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(config, dict) or config.get("do_sample") is False:
        return None  # greedy by default, or no sampling keys: nothing to recommend beyond ours
    found = {
        ours: config[theirs] for theirs, ours in _HF_SAMPLING.items() if isinstance(config.get(theirs), int | float)
    }
    return {**found, "source": "generation_config.json"} if found else None


def gguf_sampling(metadata: dict[str, Any]) -> dict[str, Any] | None:
    """The sampling a GGUF's ``general.sampling.*`` keys recommend, if it has any."""
    found = {ours: metadata[key] for key, ours in _GGUF_SAMPLING.items() if isinstance(metadata.get(key), int | float)}
    return {**found, "source": "GGUF general.sampling keys"} if found else None


def _safetensors_parameters(path: Path) -> int:
    """Count parameters from a safetensors header (8-byte length, then JSON) without reading tensors."""
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ModelFileError(_("{path} is truncated; download or copy it again.").format(path=path))
        (length,) = struct.unpack("<Q", raw)
        if length > 1 << 28:
            raise ModelFileError(
                _("{path} is not a safetensors file; the header is implausibly large.").format(path=path)
            )
        try:
            header = json.loads(fh.read(length))
        except json.JSONDecodeError:
            raise ModelFileError(
                _("{path} has a corrupt safetensors header; download or copy it again.").format(path=path)
            ) from None
    total = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for d in entry["shape"]:
            count *= d
        total += count
    return total
