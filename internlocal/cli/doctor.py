"""``internlocal doctor``: paths, versions, CPU/RAM, GPUs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from internlocal.cli.common import print_json
from internlocal.formatting import human_bytes
from internlocal.i18n import _


def doctor(as_json: Annotated[bool, typer.Option("--json", help=_("Machine-readable output."))] = False) -> None:
    # its --help is where main.py registers it
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
    out(_("paths:"))
    for key, value in info["paths"].items():
        out(f"  {key:14} {value}")
    cat = info["catalog"]
    if cat["status"] == "ok":
        out(
            _("catalog:         ok (schema {schema}, {models} models, {chats} chats)").format(
                schema=cat["schema_version"], models=cat["models"], chats=cat["chats"]
            )
        )
        out(_("  integrity:     {state}").format(state=cat["integrity"]))
        for name, state in cat["indexes"].items():
            out(_("  index {name}: {state}").format(name=name, state=state))
    else:
        out(_("catalog:         {status}").format(status=cat["status"]))
    cpu = info["cpu"]
    out(
        _("cpu:             {model} ({cores} cores, {threads} threads)").format(
            model=cpu["model"], cores=cpu["physical_cores"], threads=cpu["logical_cores"]
        )
    )
    mem = info["memory"]
    out(
        _("memory:          {free} free of {total}").format(
            free=human_bytes(mem["available_bytes"]), total=human_bytes(mem["total_bytes"])
        )
    )
    out(_("disk free:       {free}").format(free=human_bytes(info["disk_free_bytes"])))
    if info["gpus"]:
        for gpu in info["gpus"]:
            free, total = human_bytes(gpu["free_bytes"]), human_bytes(gpu["total_bytes"])
            out(
                _("gpu {index}:           {name} ({free} free of {total})").format(
                    index=gpu["index"], name=gpu["name"], free=free, total=total
                )
            )
    else:
        out(_("gpus:            none (torch sees no CUDA/MPS device)"))
    offload = _("yes") if info["llama_cpp_gpu_offload"] else _("no (CPU build)")
    out(_("llama.cpp gpu offload: {answer}").format(answer=offload))
    out(_("packages:"))
    for name, version in info["packages"].items():
        out(f"  {name:22} {version or '-'}")
    out(_("embedded models:"))
    for name, path in info["embedded_models"].items():
        out(f"  {name:28} {path or _('MISSING: run `make install`')}")
