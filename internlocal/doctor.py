"""What this machine and installation look like: paths, versions, CPU/RAM, GPUs, embedded models."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import sys
from typing import Any

from internlocal import __version__
from internlocal.config import Settings, cache_dir, config_path

PACKAGES = (
    "llama-cpp-python",
    "textual",
    "sqlmodel",
    "pydantic",
    "torch",
    "transformers",
    "peft",
    "bitsandbytes",
    "sentence-transformers",
    "chromadb",
    "huggingface-hub",
)


def report(settings: Settings) -> dict[str, Any]:
    import psutil

    from internlocal.hub.embedded import EMBEDDED_MODELS

    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    mem = psutil.virtual_memory()
    return {
        "internlocal": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "paths": {
            "config": str(config_path()),
            "home": str(settings.home),
            "catalog": str(settings.catalog_path),
            "store": str(settings.store_dir),
            "jobs": str(settings.jobs_dir),
            "hf_cache": str(cache_dir()),
            "home_writable": os.access(settings.home, os.W_OK) if settings.home.exists() else None,
        },
        "cpu": {
            "model": _cpu_model(),
            "physical_cores": psutil.cpu_count(logical=False),
            "logical_cores": psutil.cpu_count(logical=True),
        },
        "memory": {"total_bytes": mem.total, "available_bytes": mem.available},
        "disk_free_bytes": psutil.disk_usage(
            str(settings.home if settings.home.exists() else settings.home.parent)
        ).free,
        "gpus": gpus(),
        "llama_cpp_gpu_offload": _llama_gpu_offload(),
        "packages": versions,
        "embedded_models": {m.name: (str(p) if (p := m.locate()) else None) for m in EMBEDDED_MODELS},
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


NVIDIA_SMI_QUERY = "index,name,memory.total,memory.free,compute_cap"


def parse_nvidia_smi(text: str, visible: str | None = None) -> list[dict[str, Any]]:
    """GPUs from ``nvidia-smi --query-gpu=<NVIDIA_SMI_QUERY> --format=csv,noheader,nounits`` (MiB), renumbered
    as CUDA numbers them when ``CUDA_VISIBLE_DEVICES`` lists indices."""
    found = []
    for line in text.strip().splitlines():
        index, name, total, free, capability = (part.strip() for part in line.split(","))
        major = int(capability.split(".")[0]) if capability[:1].isdigit() else 0
        found.append(
            {
                "index": int(index),
                "name": name,
                "total_bytes": int(float(total)) << 20,
                "free_bytes": int(float(free)) << 20,
                "capability": capability,
                "bf16": major >= 8,
            }
        )
    if visible is not None and all(part.strip().isdigit() for part in visible.split(",") if part.strip()):
        by_index = {g["index"]: g for g in found}
        found = [by_index[int(part)] for part in visible.split(",") if part.strip() and int(part) in by_index]
        for number, gpu in enumerate(found):
            gpu["index"] = number
    return found


def gpus() -> list[dict[str, Any]]:
    """CUDA/ROCm devices. nvidia-smi (NVML) first: asking torch.cuda creates a CUDA context that holds a few
    hundred MiB of the GPU for as long as the asking process lives (the CLI, the job worker), which an 8 GB
    card cannot spare next to the training process. torch is imported here only, and only without nvidia-smi."""
    import os
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is not None:
        try:
            out = subprocess.run(
                [smi, f"--query-gpu={NVIDIA_SMI_QUERY}", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            if out.returncode == 0:
                return parse_nvidia_smi(out.stdout, os.environ.get("CUDA_VISIBLE_DEVICES"))
        except (OSError, subprocess.TimeoutExpired, ValueError):
            pass  # an old driver without compute_cap, or no devices: ask torch
    if importlib.util.find_spec("torch") is None:
        return []
    import torch

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            free, total = torch.cuda.mem_get_info(i)
            gpus.append(
                {
                    "index": i,
                    "name": props.name,
                    "total_bytes": total,
                    "free_bytes": free,
                    "capability": f"{props.major}.{props.minor}",
                    "bf16": torch.cuda.is_bf16_supported(),
                }
            )
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        gpus.append({"index": 0, "name": "Apple MPS", "total_bytes": None, "free_bytes": None})
    return gpus


def _llama_gpu_offload() -> bool | None:
    try:
        import llama_cpp
    except ImportError:
        return None
    return bool(llama_cpp.llama_supports_gpu_offload())
