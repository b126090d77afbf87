"""Settings: data directory from INTERNLOCAL_HOME or platformdirs, config.toml, environment overrides."""

from __future__ import annotations

import pytest

from internlocal.config import DEFAULT_SYSTEM_PROMPT, Settings, load_settings
from internlocal.engines.base import GenerationParams
from internlocal.errors import UserError


def test_home_from_environment_and_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERNLOCAL_HOME", str(tmp_path / "h"))
    settings = load_settings()
    assert settings.home == tmp_path / "h"
    assert settings.catalog_path == tmp_path / "h" / "catalog.sqlite"
    settings.ensure_dirs()
    assert settings.store_dir.is_dir() and settings.jobs_dir.is_dir()
    assert settings.system_prompt == DEFAULT_SYSTEM_PROMPT


def test_platform_default_home(monkeypatch):
    monkeypatch.delenv("INTERNLOCAL_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", "/tmp/xdg-data")
    assert str(Settings().home) == "/tmp/xdg-data/internlocal"


def test_config_toml_and_environment_override(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERNLOCAL_HOME", str(tmp_path))
    (tmp_path / "config.toml").write_text(
        'context_length = 8192\nthreads = 3\nsystem_prompt = "用中文回答。"\n', encoding="utf-8"
    )
    settings = load_settings()
    assert (settings.context_length, settings.threads, settings.system_prompt) == (8192, 3, "用中文回答。")
    monkeypatch.setenv("INTERNLOCAL_THREADS", "1")
    assert load_settings().threads == 1


def test_invalid_values_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERNLOCAL_HOME", str(tmp_path))
    monkeypatch.setenv("INTERNLOCAL_CONTEXT_LENGTH", "10")
    with pytest.raises(UserError, match=r"Invalid setting context_length.*INTERNLOCAL_CONTEXT_LENGTH"):
        load_settings()
    monkeypatch.delenv("INTERNLOCAL_CONTEXT_LENGTH")
    (tmp_path / "config.toml").write_text("threads = [", encoding="utf-8")
    with pytest.raises(UserError, match="not valid TOML"):
        load_settings()
    with pytest.raises(UserError, match="Invalid top_p"):
        GenerationParams.from_user(top_p=0)
    with pytest.raises(UserError, match="Invalid max_tokens"):
        GenerationParams.from_user(max_tokens="many")


def test_processes_starting_together_all_find_the_data_directory_writable(tmp_path):
    """Each start probes that it can write to the data directory. The probe used to be one fixed file name, so two
    `kb sync` started together could delete each other's probe and one stopped with "Cannot write … (No such file
    or directory)". Threads stand in for the processes here: the race is between the same system calls."""
    from concurrent.futures import ThreadPoolExecutor

    settings = Settings(home=tmp_path / "h")

    def start_many(_):
        for _ in range(300):
            settings.ensure_dirs()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(start_many, range(4)))  # re-raises the first DataDirError
    assert not list(settings.home.glob(".write-test*"))  # no probe is left behind
