"""Settings and paths: the one configuration model of the application.

Values come from ``INTERNLOCAL_*`` environment variables, then ``config.toml``, then the defaults
below. The data directory comes from ``INTERNLOCAL_HOME`` or the platform's user data directory
(``~/.local/share/internlocal`` on Linux); ``config.toml`` lives in the platform's user config
directory (``~/.config/internlocal``), except that ``INTERNLOCAL_HOME`` keeps everything in one
folder: set, the file is ``$INTERNLOCAL_HOME/config.toml`` and nothing outside it is read (the tests
rely on that). A ``config.toml`` that an earlier version kept in the data directory is moved to the
config directory the first time it is looked for.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from internlocal.errors import DataDirError
from internlocal.i18n import LANGUAGES, normalize, resolve_language
from internlocal.paths import config_path, default_home

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


def cache_dir() -> Path:
    """The Hugging Face cache (``HF_HUB_CACHE``, ``HF_HOME``): pulls reuse the model files already in it."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTERNLOCAL_", extra="ignore")

    home: Path = Field(default_factory=default_home, description="Data directory: catalog, store, jobs.")
    default_model: str | None = Field(None, description="Catalog model opened by chat when none is chosen.")
    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, description="System prompt of new chats.")
    threads: int | None = Field(None, ge=1, description="CPU threads for llama.cpp; default: physical cores.")
    context_length: int = Field(4096, ge=256, description="Context window for chat, capped by the model's own.")
    gpu_layers: int = Field(
        0, ge=-1, description="Layers offloaded to the GPU (-1: all) when llama.cpp has GPU support."
    )
    kv_cache: Literal["f16", "q8_0", "q4_0"] = Field(
        "f16", description="llama.cpp KV-cache type (quantized halves or quarters its memory)."
    )
    hub: Literal["hf", "modelscope"] = Field(
        "hf",
        description="Where registry names are pulled from (modelscope: mirror for China; the default when the "
        "language is zh-CN).",
    )
    language: str | None = Field(
        None,
        description="Interface language: en or zh-CN (unset: INTERNLOCAL_LANG, then the locale).",
    )
    engine: Literal["auto", "llama.cpp", "transformers", "lmdeploy"] = Field(
        "auto",
        description="Runtime for models: auto picks by format (GGUF → llama.cpp, HF → LMDeploy on an NVIDIA GPU "
        "when installed, else transformers; AWQ → LMDeploy).",
    )

    # limits on what one file may bring in; a refusal names the limit and how to raise it (docs/reliability.md)
    kb_max_file_mb: int = Field(50, ge=1, description="Knowledge bases skip files larger than this (MB).")
    kb_max_line_chars: int = Field(
        100_000, ge=1000, description="Knowledge bases skip files with a longer line (generated or minified data)."
    )
    kb_max_chunks_per_file: int = Field(5_000, ge=1, description="Knowledge bases skip files that make more chunks.")
    data_max_rows: int = Field(5_000_000, ge=1, description="Datasets with more rows are refused.")
    data_max_row_chars: int = Field(1_000_000, ge=100, description="Datasets with a longer row are refused.")

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str | None) -> str | None:
        if value is None:
            return None
        known = normalize(value)
        if known is None:
            raise ValueError(f"unknown language {value!r}; choose one of: {', '.join(LANGUAGES)}")
        return known

    @model_validator(mode="after")
    def _modelscope_for_chinese(self) -> Settings:
        # Chinese users reach ModelScope where the Hugging Face Hub is slow or blocked; an explicit hub still wins
        if "hub" not in self.model_fields_set and (self.language or resolve_language()) == "zh-CN":
            self.hub = "modelscope"
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = config_path()
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_file))

    @cached_property
    def catalog_path(self) -> Path:
        return self.home / "catalog.sqlite"

    @cached_property
    def store_dir(self) -> Path:
        """Content-addressed blobs (``blobs/sha256-…``) and per-model manifests."""
        return self.home / "store"

    @cached_property
    def jobs_dir(self) -> Path:
        """One JSONL event file (and state file) per job."""
        return self.home / "jobs"

    def ensure_dirs(self) -> None:
        """Create the data directories, or fail with one sentence that says what to do."""
        for path in (self.home, self.store_dir, self.jobs_dir):
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DataDirError(
                    f"Cannot create the data directory {path} ({exc.strerror}); "
                    "set INTERNLOCAL_HOME to a folder you can write to."
                ) from None
        import tempfile

        # a name of its own per start: with one fixed name, two processes starting together could delete each
        # other's probe and one of them would report the folder unwritable
        try:
            handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=self.home)
            os.close(handle)
            os.unlink(probe)
        except OSError as exc:
            raise DataDirError(
                f"Cannot write to the data directory {self.home} ({exc.strerror}); "
                "set INTERNLOCAL_HOME to a folder you can write to."
            ) from None


def load_settings(**overrides) -> Settings:
    """Settings, or one sentence naming the bad value and where it came from."""
    import tomllib

    from pydantic import ValidationError

    from internlocal.errors import UserError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"])
        raise UserError(
            f"Invalid setting {name}: {err['msg'].lower()}; fix INTERNLOCAL_{name.upper()} or {config_path()}."
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{config_path()} is not valid TOML ({exc}); fix or remove it.") from None
