"""Choosing and loading the engine for a catalog model; one loaded model kept at a time."""

from __future__ import annotations

import threading
from pathlib import Path

from internlocal.catalog.schema import Model
from internlocal.config import Settings
from internlocal.engines.base import Embedder, Engine
from internlocal.errors import ModelFileError, Unsupported, UserError


def load_engine(model: Model, settings: Settings) -> Engine:
    """The engine for ``model`` by its format (GGUF → llama.cpp)."""
    if model.kind == "embedding":
        raise UserError(f"{model.name} is an embedding model and cannot chat; pick a chat model.")
    if model.format == "remote":
        from internlocal.engines.remote import RemoteEngine

        meta = model.metadata_dict
        return RemoteEngine(model.path, meta.get("remote_model") or model.name, api_key_env=meta.get("api_key_env"),
                            model_name=model.name, context_length=model.context_length or 0)
    if not Path(model.path).exists():
        raise ModelFileError(f"The file of {model.name} is gone ({model.path}); import or download it again.")
    if model.format == "gguf":
        from internlocal.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(
            model.path,
            model_name=model.name,
            n_ctx=settings.context_length,
            n_threads=settings.threads,
            n_gpu_layers=settings.gpu_layers,
            chat_template=model.chat_template,
        )
    if model.format == "hf":
        from internlocal.engines.transformers_engine import TransformersEngine

        meta = model.metadata_dict
        return TransformersEngine(model.path, model_name=model.name, adapter=meta.get("adapter"),
                                  quantization=meta.get("load_in"), chat_template=model.chat_template,
                                  n_ctx=settings.context_length, threads=settings.threads)
    raise Unsupported(f"No engine here runs {model.format} models like {model.name}; convert it to GGUF.")


def load_embedder(model: Model) -> Embedder:
    if model.kind != "embedding":
        raise UserError(f"{model.name} is not an embedding model; pick one such as all-minilm-l6-v2.")
    from internlocal.engines.sentence_transformers import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(model.path, model_name=model.name)


class EngineCache:
    """Keeps the most recently used engine loaded; switching models frees the previous one."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._name: str | None = None
        self._engine: Engine | None = None

    def get(self, model: Model) -> Engine:
        with self._lock:
            if self._engine is not None and self._name == model.name:
                return self._engine
            self._close()
            self._engine = load_engine(model, self.settings)
            self._name = model.name
            return self._engine

    @property
    def loaded(self) -> str | None:
        return self._name

    def _close(self) -> None:
        if self._engine is not None:
            self._engine.close()
        self._engine, self._name = None, None

    def close(self) -> None:
        with self._lock:
            self._close()
