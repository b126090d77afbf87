"""What users expect of a command-line tool: --version, shell completion that never opens the TUI, a config
command, where things live, quiet output unless asked, and exit codes that say what went wrong."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess

import pytest

from internlocal import __version__


def run(internlocal_bin, env, *args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([internlocal_bin, *args], env=env, capture_output=True, text=True, timeout=300, **kw)


def test_version_and_completion_scripts_for_every_shell_without_opening_the_tui(internlocal_bin, cli_env):
    assert run(internlocal_bin, cli_env, "--version").stdout.strip() == f"internlocal {__version__}"
    for shell, marker in (("bash", "complete -o"), ("zsh", "compdef"), ("fish", "complete --command internlocal")):
        # what --install-completion writes is what the shell sources: the script, generated here
        script = run(internlocal_bin, {**cli_env, "_INTERNLOCAL_COMPLETE": f"source_{shell}"}, stdin=subprocess.DEVNULL)
        assert script.returncode == 0 and marker in script.stdout, (shell, script.stdout[-500:], script.stderr[-500:])
    # the shell's completion request: no arguments (the words are in the environment), answered, no TUI
    words = {"COMP_WORDS": "internlocal tr", "COMP_CWORD": "1", "_INTERNLOCAL_COMPLETE": "complete_bash"}
    asked = run(internlocal_bin, {**cli_env, **words}, stdin=subprocess.DEVNULL)
    assert asked.returncode == 0 and asked.stdout.split() == ["train"], asked.stdout + asked.stderr
    # --show-completion / --install-completion find the shell they run in: a user's bash here
    shown = subprocess.run(
        # a second command keeps bash from exec'ing into internlocal, so bash stays its parent whoever started it
        ["bash", "-c", f"{internlocal_bin} --show-completion; exit $?"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and "_internlocal_completion" in shown.stdout, shown.stderr


def test_config_path_set_show_unset_and_a_bad_value_changes_nothing(internlocal_bin, cli_env, home):
    path = run(internlocal_bin, cli_env, "config", "path").stdout.strip()
    assert path == str(home / "config.toml")  # INTERNLOCAL_HOME keeps everything in one folder
    (home / "config.toml").write_text("# my settings\nthreads = 2\n", encoding="utf-8")
    assert run(internlocal_bin, cli_env, "config", "set", "context_length", "8192").returncode == 0
    assert run(internlocal_bin, cli_env, "config", "set", "system_prompt", "用中文回答。").returncode == 0
    bad = run(internlocal_bin, cli_env, "config", "set", "context_length", "10")
    assert bad.returncode == 1 and "nothing was written" in bad.stderr and "Traceback" not in bad.stderr
    unknown = run(internlocal_bin, cli_env, "config", "set", "colour", "blue")
    assert unknown.returncode == 1 and "no setting 'colour'" in unknown.stderr
    text = (home / "config.toml").read_text(encoding="utf-8")
    assert "# my settings" in text and "context_length = 8192" in text and "threads = 2" in text
    shown = json.loads(run(internlocal_bin, cli_env, "config", "show", "--json").stdout)["settings"]
    assert shown["context_length"] == {"value": 2048, "from": "environment"}  # cli_env sets it; env wins
    assert shown["threads"] == {"value": 2, "from": "file"} and shown["system_prompt"]["value"] == "用中文回答。"
    assert shown["kv_cache"] == {"value": "f16", "from": "default"}
    assert run(internlocal_bin, cli_env, "config", "unset", "threads").returncode == 0
    assert "threads" not in (home / "config.toml").read_text(encoding="utf-8")


def test_the_config_file_moves_to_the_config_directory_and_doctor_says_where_things_live(
    internlocal_bin, cli_env, tmp_path
):
    """Without INTERNLOCAL_HOME: data in XDG_DATA_HOME, settings in XDG_CONFIG_HOME; an earlier version's
    config.toml in the data directory is moved there, its values kept."""
    env = {k: v for k, v in cli_env.items() if k not in ("INTERNLOCAL_HOME", "INTERNLOCAL_CONTEXT_LENGTH")}
    env.update(XDG_DATA_HOME=str(tmp_path / "data"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    old = tmp_path / "data" / "internlocal" / "config.toml"
    old.parent.mkdir(parents=True)
    old.write_text("context_length = 6144\n", encoding="utf-8")
    info = json.loads(run(internlocal_bin, env, "doctor", "--json").stdout)
    new = tmp_path / "config" / "internlocal" / "config.toml"
    assert info["paths"]["config"] == str(new) and info["paths"]["home"] == str(tmp_path / "data" / "internlocal")
    assert info["paths"]["hf_cache"] == str(tmp_path / "cache" / "huggingface" / "hub")
    assert new.read_text(encoding="utf-8") == "context_length = 6144\n" and not old.exists()
    shown = json.loads(run(internlocal_bin, env, "config", "show", "--json").stdout)["settings"]
    assert shown["context_length"] == {"value": 6144, "from": "file"}
    text = run(internlocal_bin, env, "doctor").stdout
    assert f"config         {new}" in text and "hf_cache" in text


def test_exit_codes_tell_a_user_error_a_usage_error_a_failed_job_and_the_network_apart(internlocal_bin, cli_env):
    assert run(internlocal_bin, cli_env, "models", "show", "no-such-model").returncode == 1
    usage = run(internlocal_bin, cli_env, "models", "list", "--no-such-option")
    assert usage.returncode == 2 and "No such option" in usage.stderr
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    offline = run(internlocal_bin, cli_env, "models", "pull", f"http://127.0.0.1:{port}/model.gguf")
    assert offline.returncode == 4 and "could not be reached" in offline.stderr, offline.stderr
    refused = run(internlocal_bin, cli_env, "kb", "sync", "nope")
    assert refused.returncode == 1  # refused before any job starts: a user error, not a failed job


@pytest.mark.slow
def test_library_noise_stays_out_unless_asked_for(internlocal_bin, cli_env, tmp_path, monkeypatch):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "deadline.md").write_text("# Deadline\n\nThe report is due on Friday.\n", encoding="utf-8")
    created = run(internlocal_bin, cli_env, "kb", "create", "notes", str(notes))
    assert created.returncode == 0, created.stderr
    quiet = run(internlocal_bin, cli_env, "kb", "search", "notes", "when is the report due")
    assert quiet.returncode == 0 and "Friday" in quiet.stdout
    assert quiet.stderr == "", quiet.stderr  # no "Loading weights" bar, no library warnings
    # --verbose wins over a quieter INTERNLOCAL_LOG a shell or a parent process left behind
    left = {"INTERNLOCAL_LOG": "warning", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    loud = run(internlocal_bin, {**cli_env, **left}, "--verbose", "kb", "search", "notes", "due")
    assert loud.returncode == 0 and "Friday" in loud.stdout
    assert "Loading weights" in loud.stderr or "INFO" in loud.stderr  # the libraries speak when asked
    from internlocal.logs import level_from

    for value, verbose, level in (("", False, "WARNING"), ("info", False, "INFO"), ("debug", True, "DEBUG")):
        monkeypatch.setenv("INTERNLOCAL_LOG", value)  # the variable alone also lets them through
        assert logging.getLevelName(level_from(verbose)) == level


def test_a_job_that_fails_exits_3(internlocal_bin, cli_env, home):
    """The evaluation job refuses an answered-nothing model at run time: the command followed it and says so."""
    gguf = home / "copy.gguf"
    from internlocal.hub.embedded import CHAT_MODEL

    gguf.write_bytes(CHAT_MODEL.locate().read_bytes())
    assert run(internlocal_bin, cli_env, "models", "import", str(gguf), "--name", "doomed").returncode == 0
    os.remove(gguf)  # gone before the job loads it
    failed = run(internlocal_bin, cli_env, "eval", "run", "doomed", "capitals_en_qa", "--limit", "1")
    assert failed.returncode == 3 and "doomed" in failed.stderr, failed.stderr
