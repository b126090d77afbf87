"""Choosing and loading the engine for a catalog model; one loaded model kept at a time."""

from __future__ import annotations

import threading
from pathlib import Path

from internlocal.catalog.schema import Model
from internlocal.config import Settings
from internlocal.engines.base import Embedder, Engine
from internlocal.errors import ModelFileError, Unsupported, UserError
from internlocal.i18n import _


def choose_engine(model: Model, settings: Settings) -> str:
    """The runtime for ``model``: the setting when it names one, else by format and hardware."""
    if model.format == "remote":
        return "remote"
    meta = model.metadata_dict
    if settings.engine != "auto":
        wanted = settings.engine
    elif model.format == "gguf":
        wanted = "llama.cpp"
    elif meta.get("engine") == "lmdeploy" or meta.get("model_format") == "awq":
        wanted = "lmdeploy"
    else:
        from internlocal.envs import lmdeploy_executable

        wanted = "lmdeploy" if lmdeploy_executable(settings.home) is not None and _has_cuda() else "transformers"
    if wanted == "llama.cpp" and model.format != "gguf":
        raise UserError(
            _("llama.cpp runs GGUF files; {name} is {format} (convert it, or choose another engine).").format(
                name=model.name, format=model.format
            )
        )
    if wanted == "transformers" and model.format != "hf":
        raise UserError(
            _("transformers runs Hugging Face folders; {name} is {format}.").format(
                name=model.name, format=model.format
            )
        )
    return wanted


def _has_cuda() -> bool:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def load_engine(model: Model, settings: Settings) -> Engine:
    """The engine for ``model`` (see ``choose_engine``)."""
    if model.kind == "embedding":
        raise UserError(_("{name} is an embedding model and cannot chat; pick a chat model.").format(name=model.name))
    if model.kind == "projector":
        raise UserError(
            _("{name} is a vision model's projector; chat with the model it belongs to.").format(name=model.name)
        )
    name = choose_engine(model, settings)
    meta = model.metadata_dict
    if name == "remote":
        from internlocal.engines.remote import RemoteEngine

        return RemoteEngine(
            model.path,
            meta.get("remote_model") or model.name,
            api_key_env=meta.get("api_key_env"),
            model_name=model.name,
            context_length=model.context_length or 0,
        )
    if not Path(model.path).exists():
        raise ModelFileError(
            _("The file of {name} is gone ({path}); import or download it again.").format(
                name=model.name, path=model.path
            )
        )
    if name == "llama.cpp":
        from internlocal.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(
            model.path,
            model_name=model.name,
            n_ctx=settings.context_length,
            n_threads=settings.threads,
            n_gpu_layers=settings.gpu_layers,
            chat_template=model.chat_template,
            kv_cache=settings.kv_cache,
            lora_path=meta.get("gguf_lora"),
            projector_path=model.projector_path if model.vision else None,
        )
    if name == "transformers" and model.vision:
        from internlocal.engines.transformers_vision import TransformersVisionEngine

        return TransformersVisionEngine(
            model.path,
            model_name=model.name,
            chat_template=model.chat_template,
            n_ctx=settings.context_length,
            threads=settings.threads,
        )
    if name == "transformers":
        from internlocal.engines.transformers_engine import TransformersEngine

        return TransformersEngine(
            model.path,
            model_name=model.name,
            adapter=meta.get("adapter"),
            quantization=meta.get("load_in"),
            chat_template=model.chat_template,
            n_ctx=settings.context_length,
            threads=settings.threads,
        )
    if name == "lmdeploy":
        from internlocal.engines.lmdeploy_engine import LMDeployEngine, LMDeployOptions

        options = LMDeployOptions(session_len=settings.context_length, model_format=meta.get("model_format"))
        return LMDeployEngine(model.path, home=settings.home, model_name=model.name, options=options)
    raise Unsupported(
        _("No engine here runs {format} models like {name}.").format(format=model.format, name=model.name)
    )


def load_embedder(model: Model) -> Embedder:
    if model.kind != "embedding":
        raise UserError(
            _("{name} is not an embedding model; pick one such as all-minilm-l6-v2.").format(name=model.name)
        )
    if model.format == "remote":
        from internlocal.engines.remote import RemoteEmbedder

        meta = model.metadata_dict
        return RemoteEmbedder(
            model.path,
            meta.get("remote_model") or model.name,
            api_key_env=meta.get("api_key_env"),
            model_name=model.name,
        )
    return local_embedder(model.path, model_name=model.name)


def local_embedder(path: str | Path, *, model_name: str | None = None) -> Embedder:
    """The embedder for a sentence-transformers folder on this machine."""
    from internlocal.engines.transformers_embedder import TransformersEmbedder, plain_layout

    layout = plain_layout(path)
    if layout is not None:  # the common shape (MiniLM, BGE, E5 …): seconds faster to load than sentence-transformers
        return TransformersEmbedder(path, layout, model_name=model_name)
    from internlocal.engines.sentence_transformers import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(path, model_name=model_name)


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
