"""``internlocal doctor``: paths, versions, CPU/RAM, GPUs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from internlocal.cli.common import print_json
from internlocal.formatting import human_bytes


def doctor(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Where settings, data and the Hugging Face cache live, what is installed, and what hardware is here."""
    from internlocal.config import load_settings
    from internlocal.doctor import report

    settings = load_settings()
    info = report(settings)
    from internlocal.errors import UserError

    try:
        from internlocal.bootstrap import bootstrap
        from internlocal.catalog.db import integrity
        from internlocal.catalog.migrations import LATEST_VERSION

        svc = bootstrap(settings)
        info["catalog"] = {
            "status": "ok",
            "schema_version": LATEST_VERSION,
            "models": len(svc.catalog.list_models()),
            "chats": len(svc.catalog.list_chats()),
            "integrity": integrity(settings.catalog_path),
            "indexes": {kb.name: integrity(Path(kb.path) / "index.sqlite") for kb in svc.catalog.list_kbs()},
        }
        svc.close()
    except UserError as exc:  # doctor reports a broken catalog or data directory instead of failing on it
        info["catalog"] = {"status": str(exc)}
    if as_json:
        print_json(info)
        return
    out = typer.echo
    out(f"internlocal {info['internlocal']}  (Python {info['python']}, {info['platform']})")
    out("paths:")
    for key, value in info["paths"].items():
        out(f"  {key:14} {value}")
    cat = info["catalog"]
    if cat["status"] == "ok":
        out(f"catalog:         ok (schema {cat['schema_version']}, {cat['models']} models, {cat['chats']} chats)")
        out(f"  integrity:     {cat['integrity']}")
        for name, state in cat["indexes"].items():
            out(f"  index {name}: {state}")
    else:
        out(f"catalog:         {cat['status']}")
    cpu = info["cpu"]
    out(f"cpu:             {cpu['model']} ({cpu['physical_cores']} cores, {cpu['logical_cores']} threads)")
    mem = info["memory"]
    out(f"memory:          {human_bytes(mem['available_bytes'])} free of {human_bytes(mem['total_bytes'])}")
    out(f"disk free:       {human_bytes(info['disk_free_bytes'])}")
    if info["gpus"]:
        for gpu in info["gpus"]:
            free, total = human_bytes(gpu["free_bytes"]), human_bytes(gpu["total_bytes"])
            out(f"gpu {gpu['index']}:           {gpu['name']} ({free} free of {total})")
    else:
        out("gpus:            none (torch sees no CUDA/MPS device)")
    out(f"llama.cpp gpu offload: {'yes' if info['llama_cpp_gpu_offload'] else 'no (CPU build)'}")
    out("packages:")
    for name, version in info["packages"].items():
        out(f"  {name:22} {version or '-'}")
    out("embedded models:")
    for name, path in info["embedded_models"].items():
        out(f"  {name:28} {path or 'MISSING: run `make install`'}")
