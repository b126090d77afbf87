"""``internlocal doctor``: paths, versions, CPU/RAM, GPUs."""

from __future__ import annotations

from typing import Annotated

import typer

from internlocal.cli.common import human_bytes, print_json


def doctor(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Show where data lives, what is installed, and what hardware is available."""
    from internlocal.config import load_settings
    from internlocal.doctor import report

    settings = load_settings()
    info = report(settings)
    catalog_status = "ok"
    try:
        from internlocal.bootstrap import bootstrap

        svc = bootstrap(settings)
        info["catalog"] = {"status": "ok", "schema": svc.catalog.previous_version and "upgraded" or "current",
                           "models": len(svc.catalog.list_models())}
        svc.close()
    except Exception as exc:  # doctor reports a broken catalog instead of failing on it
        catalog_status = str(exc)
        info["catalog"] = {"status": catalog_status}
    if as_json:
        print_json(info)
        return
    out = typer.echo
    out(f"internlocal {info['internlocal']}  (Python {info['python']}, {info['platform']})")
    out("paths:")
    for key, value in info["paths"].items():
        out(f"  {key:14} {value}")
    out(f"catalog:         {info['catalog']}")
    cpu = info["cpu"]
    out(f"cpu:             {cpu['model']} ({cpu['physical_cores']} cores, {cpu['logical_cores']} threads)")
    mem = info["memory"]
    out(f"memory:          {human_bytes(mem['available_bytes'])} free of {human_bytes(mem['total_bytes'])}")
    out(f"disk free:       {human_bytes(info['disk_free_bytes'])}")
    if info["gpus"]:
        for gpu in info["gpus"]:
            out(f"gpu {gpu['index']}:           {gpu['name']} ({human_bytes(gpu['free_bytes'])} free of {human_bytes(gpu['total_bytes'])})")
    else:
        out("gpus:            none (torch sees no CUDA/MPS device)")
    out(f"llama.cpp gpu offload: {'yes' if info['llama_cpp_gpu_offload'] else 'no (CPU build)'}")
    out("packages:")
    for name, version in info["packages"].items():
        out(f"  {name:22} {version or '-'}")
    out("embedded models:")
    for name, path in info["embedded_models"].items():
        out(f"  {name:28} {path or 'MISSING: run `make install`'}")
