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
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from internlocal.errors import DataDirError
from internlocal.i18n import LANGUAGES, N_, _, normalize, resolve_language
from internlocal.paths import config_path, default_home

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


def cache_dir() -> Path:
    """The Hugging Face cache (``HF_HUB_CACHE``, ``HF_HOME``): pulls reuse the model files already in it."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTERNLOCAL_", extra="ignore")

    home: Path = Field(default_factory=default_home, description=N_("Data directory: catalog, store, jobs."))
    default_model: str | None = Field(None, description=N_("Catalog model opened by chat when none is chosen."))
    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, description=N_("System prompt of new chats."))
    threads: int | None = Field(None, ge=1, description=N_("CPU threads for llama.cpp; default: physical cores."))
    context_length: int = Field(4096, ge=256, description=N_("Context window for chat, capped by the model's own."))
    gpu_layers: int = Field(
        0, ge=-1, description=N_("Layers offloaded to the GPU (-1: all) when llama.cpp has GPU support.")
    )
    kv_cache: Literal["f16", "q8_0", "q4_0"] = Field(
        "f16", description=N_("llama.cpp KV-cache type (quantized halves or quarters its memory).")
    )
    hub: Literal["hf", "modelscope"] = Field(
        "hf",
        description=N_(
            "Where registry names are pulled from (modelscope: mirror for China; the default when the "
            "language is zh-CN)."
        ),
    )
    language: str | None = Field(
        None,
        description=N_("Interface language: en or zh-CN (unset: INTERNLOCAL_LANG, then the locale)."),
    )
    engine: Literal["auto", "llama.cpp", "transformers", "lmdeploy"] = Field(
        "auto",
        description=N_(
            "Runtime for models: auto picks by format (GGUF → llama.cpp, HF → LMDeploy on an NVIDIA GPU "
            "when installed, else transformers; AWQ → LMDeploy)."
        ),
    )

    # limits on what one file may bring in; a refusal names the limit and how to raise it (docs/reliability.md)
    kb_max_file_mb: int = Field(50, ge=1, description=N_("Knowledge bases skip files larger than this (MB)."))
    kb_max_line_chars: int = Field(
        100_000, ge=1000, description=N_("Knowledge bases skip files with a longer line (generated or minified data).")
    )
    kb_max_chunks_per_file: int = Field(
        5_000, ge=1, description=N_("Knowledge bases skip files that make more chunks.")
    )
    data_max_rows: int = Field(5_000_000, ge=1, description=N_("Datasets with more rows are refused."))
    data_max_row_chars: int = Field(1_000_000, ge=100, description=N_("Datasets with a longer row are refused."))

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str | None) -> str | None:
        if value is None:
            return None
        known = normalize(value)
        if known is None:
            # the user reads it: load_settings and `config set` show pydantic's message for it
            raise ValueError(
                _("unknown language {value!r}; choose one of: {names}").format(value=value, names=", ".join(LANGUAGES))
            )
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
                    _(
                        "Cannot create the data directory {path} ({reason}); "
                        "set INTERNLOCAL_HOME to a folder you can write to."
                    ).format(path=path, reason=exc.strerror)
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
                _(
                    "Cannot write to the data directory {path} ({reason}); "
                    "set INTERNLOCAL_HOME to a folder you can write to."
                ).format(path=self.home, reason=exc.strerror)
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
            _("Invalid setting {name}: {problem}; fix {variable} or {file}.").format(
                name=name, problem=err["msg"].lower(), variable=f"INTERNLOCAL_{name.upper()}", file=config_path()
            )
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(
            _("{path} is not valid TOML ({error}); fix or remove it.").format(path=config_path(), error=exc)
        ) from None


def read_settings_document(path: Path) -> Any:
    """``config.toml`` as a tomlkit document (its comments and order kept); an empty one where there is none."""
    import tomlkit

    from internlocal.errors import UserError

    if not path.exists():
        return tomlkit.document()
    try:
        return tomlkit.parse(path.read_text(encoding="utf-8"))
    except tomlkit.exceptions.ParseError as exc:
        raise UserError(
            _("{path} is not valid TOML ({error}); fix or remove it.").format(path=path, error=exc)
        ) from None


def write_setting(key: str, raw: Any | None) -> Any:
    """Set ``key`` in ``config.toml`` (``raw`` is read as TOML where it parses, else as a string; None takes the
    key out), the file's other lines kept. The whole file is validated first: a bad value writes nothing.
    Returns the value written."""
    import tempfile

    import tomlkit
    from pydantic import ValidationError

    from internlocal.errors import UserError

    if key not in Settings.model_fields:
        raise UserError(_("There is no setting {key!r}; `internlocal config show` lists them.").format(key=key))
    file = config_path()
    document = read_settings_document(file)
    if raw is None:
        document.pop(key, None)
    elif isinstance(raw, str):
        try:
            document[key] = tomlkit.parse(f"v = {raw}")["v"]
        except tomlkit.exceptions.ParseError:
            document[key] = raw  # a bare word: a string
    else:
        document[key] = raw
    try:  # the whole file as it would be, validated (the environment does not hide a bad value here)
        Settings.model_validate({k: v for k, v in document.unwrap().items() if k in Settings.model_fields})
    except ValidationError as exc:
        raise UserError(
            _("Invalid setting {key}: {problem}; nothing was written.").format(
                key=key, problem=exc.errors()[0]["msg"].lower()
            )
        ) from None
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=".config.", suffix=".toml")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        text = tomlkit.dumps(document)
        fh.write(text if text.endswith("\n") else text + "\n")
    os.replace(tmp, file)  # the old file or the new one, never half of either
    return document.get(key)
