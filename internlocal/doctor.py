"""What this machine and installation look like: paths, versions, CPU/RAM, GPUs, embedded models."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import sys
from typing import Any

from internlocal import __version__
from internlocal.config import Settings

PACKAGES = ("llama-cpp-python", "textual", "sqlmodel", "pydantic", "torch", "transformers", "peft", "bitsandbytes",
            "sentence-transformers", "chromadb", "huggingface-hub")


def report(settings: Settings) -> dict[str, Any]:
    import psutil

    from internlocal.hub.embedded import EMBEDDED_MODELS

    versions = {}
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
            "home": str(settings.home),
            "catalog": str(settings.catalog_path),
            "store": str(settings.store_dir),
            "jobs": str(settings.jobs_dir),
            "home_writable": os.access(settings.home, os.W_OK) if settings.home.exists() else None,
        },
        "cpu": {
            "model": _cpu_model(),
            "physical_cores": psutil.cpu_count(logical=False),
            "logical_cores": psutil.cpu_count(logical=True),
        },
        "memory": {"total_bytes": mem.total, "available_bytes": mem.available},
        "disk_free_bytes": psutil.disk_usage(str(settings.home if settings.home.exists() else settings.home.parent)).free,
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


def gpus() -> list[dict[str, Any]]:
    """CUDA/ROCm devices as torch sees them; torch is imported here only (never at TUI start-up)."""
    if importlib.util.find_spec("torch") is None:
        return []
    import torch

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            free, total = torch.cuda.mem_get_info(i)
            gpus.append({"index": i, "name": props.name, "total_bytes": total, "free_bytes": free,
                         "capability": f"{props.major}.{props.minor}", "bf16": torch.cuda.is_bf16_supported()})
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        gpus.append({"index": 0, "name": "Apple MPS", "total_bytes": None, "free_bytes": None})
    return gpus


def _llama_gpu_offload() -> bool | None:
    try:
        import llama_cpp
    except ImportError:
        return None
    return bool(llama_cpp.llama_supports_gpu_offload())
