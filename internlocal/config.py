"""Settings and paths: the one configuration model of the application.

Values come from ``INTERNLOCAL_*`` environment variables, then ``config.toml`` in the data
directory, then the defaults below. The data directory itself comes from ``INTERNLOCAL_HOME``
or the platform's user data directory.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from internlocal.errors import DataDirError

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


def default_home() -> Path:
    env = os.environ.get("INTERNLOCAL_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("internlocal", appauthor=False))


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
        "hf", description="Where registry names are pulled from (modelscope: mirror for China)."
    )
    engine: Literal["auto", "llama.cpp", "transformers", "lmdeploy"] = Field(
        "auto",
        description="Runtime for models: auto picks by format (GGUF → llama.cpp, HF → LMDeploy on an NVIDIA GPU "
        "when installed, else transformers; AWQ → LMDeploy).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = default_home() / "config.toml"
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
        probe = self.home / ".write-test"
        try:
            probe.write_bytes(b"")
            probe.unlink()
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
            f"Invalid setting {name}: {err['msg'].lower()}; "
            f"fix INTERNLOCAL_{name.upper()} or {default_home() / 'config.toml'}."
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{default_home() / 'config.toml'} is not valid TOML ({exc}); fix or remove it.") from None
