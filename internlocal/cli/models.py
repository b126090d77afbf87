"""``internlocal models …``: the registry, the catalog's models and the store."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from internlocal.cli.common import pad, print_json, services
from internlocal.formatting import human_bytes, human_count
from internlocal.i18n import N_, _, label

app = typer.Typer(help=_("Models: browse the registry, pull, import, convert, quantize, remove."), no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help=_("Machine-readable output (NDJSON events for jobs)."))]
DetachOpt = Annotated[bool, typer.Option("--detach", "-d", help=_("Start the job and return its id at once."))]

# stored values (catalog and job results), translated where they are shown
KIND_LABELS = {
    "chat": N_("chat"),
    "embedding": N_("embedding"),
    "projector": N_("projector"),
    "base": N_("base"),
}
STORAGE_LABELS = {"store": N_("store"), "reference": N_("reference")}
RESULT_LABELS = {"pulled": N_("pulled"), "already present": N_("already present"), "done": N_("done")}
VERIFY_LABELS = {"ok": N_("ok"), "changed": N_("changed"), "missing": N_("missing"), "unhashed": N_("unhashed")}
LINEAGE_LABELS = {"dataset": N_("dataset"), "train_run": N_("train_run")}


def _console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)  # pipes get whole names, not "…"


def _table(*columns: str):
    from rich.table import Table

    table = Table(box=None)
    for column in columns:
        table.add_column(column, no_wrap=True)
    return table


def _follow(job, *, detach: bool, as_json: bool) -> None:
    """Follow a started job to the end (progress bar, or NDJSON with --json) and say what it made."""
    from internlocal.cli.progress import follow_job

    job = follow_job(services().jobs, job, detach=detach, as_json=as_json)
    if job is None:
        return
    if not as_json:
        result = job.result or {}
        typer.echo(
            f"{result.get('model', '')}: {label(RESULT_LABELS, result.get('status', 'done'))}"
            + (f" ({result['path']})" if result.get("path") else "")
        )
        if result.get("warning"):
            typer.echo(_("note: {note}").format(note=result["warning"]))


@app.command("list", help=_("Models in the catalog."))
def list_models(as_json: JsonOpt = False) -> None:
    models = services().catalog.list_models()
    if as_json:
        print_json([m.summary() for m in models])
        return
    table = _table(
        _("name"),
        _("kind"),
        _("vision"),
        _("format"),
        _("arch"),
        _("quant"),
        _("params"),
        _("ctx"),
        _("size"),
        _("where"),
    )
    for m in models:
        table.add_row(
            m.name,
            label(KIND_LABELS, m.kind),
            _("vision") if m.vision else "-",
            m.format,
            m.architecture or "-",
            m.quantization or "-",
            human_count(m.parameters),
            str(m.context_length or "-"),
            human_bytes(m.size_bytes),
            label(STORAGE_LABELS, m.storage),
        )
    _console().print(table)


@app.command("show", help=_("One model: its fields, where its files are, and its lineage."))
def show(name: str, as_json: JsonOpt = False) -> None:
    svc = services()
    model = svc.catalog.get_model(name)
    parents = [
        (e.operation, e.parent_type, e.parent_id, e.params_json) for e in svc.catalog.parents(("model", model.id))
    ]
    children = [(e.operation, e.child_type, e.child_id) for e in svc.catalog.children(("model", model.id))]

    def other_end(kind: str, ident: int, shown: bool = False) -> str:
        """The lineage's other end: English in --json (programs read it), translated when ``shown``."""
        if kind == "model":
            found = svc.catalog.find_model(ident)
            if found:
                return found.name
            return _("model {id} (removed)").format(id=ident) if shown else f"model {ident} (removed)"
        names = {
            "dataset": {d.id: d.name for d in svc.catalog.list_datasets()},
            "train_run": {r.id: r.name for r in svc.catalog.list_train_runs()},
        }.get(kind, {})
        return f"{label(LINEAGE_LABELS, kind) if shown else kind} {names.get(ident, ident)}"

    from internlocal.hub.library import projector_users, projectors_of

    # the projector edges both ends still agree on (an edge outlives a deleted row whose id SQLite reuses)
    linked = projectors_of(svc.catalog, model)
    users = {m.name for m in projector_users(svc.catalog, model)} if model.kind == "projector" else set()
    info = {
        **model.summary(),
        "projector": model.projector_path,
        "projector_model": linked[0].name if linked else None,
        "metadata": model.metadata_dict,
        "chat_template": model.chat_template,
        "parents": [{"operation": op, "from": other_end(t, i), "params": p} for op, t, i, p in parents],
        "children": [{"operation": op, "to": other_end(t, i)} for op, t, i in children],
    }
    if as_json:
        print_json(info)
        return

    def line(title: str, value: object) -> None:
        typer.echo(f"{pad(title, 15)} {value}")

    # the field names are the --json keys; as labels they are translated
    for key, title in (
        ("name", _("name")),
        ("kind", _("kind")),
        ("format", _("format")),
        ("architecture", _("architecture")),
        ("quantization", _("quantization")),
        ("parameters", _("parameters")),
        ("context_length", _("context_length")),
        ("size_bytes", _("size_bytes")),
        ("sha256", "sha256"),
        ("path", _("path")),
        ("storage", _("storage")),
        ("source", _("source")),
        ("created_at", _("created_at")),
    ):
        value = info[key]
        if key == "kind":
            value = label(KIND_LABELS, value)
        elif key == "storage":
            value = label(STORAGE_LABELS, value)
        line(title, value)
    if model.vision:
        line(_("vision"), _("yes: it reads images"))
    if info["projector"] or info["projector_model"]:
        line(_("projector"), f"{info['projector_model'] or '-'} ({info['projector'] or _('path not recorded')})")
    for operation, kind, ident, params in parents:
        if operation != "projector":
            line(
                _("made from"),
                _("{source} by {operation} {params}").format(
                    source=other_end(kind, ident, shown=True), operation=operation, params=params
                ),
            )
    for operation, kind, ident in children:
        to = other_end(kind, ident)
        if operation == "projector":
            if to in users:
                line(_("projector of"), to)
        else:
            line(_("used for"), f"{other_end(kind, ident, shown=True)} ({operation})")


@app.command("search", help=_("Browse the curated registry (models/*.yaml)."))
def search(
    text: Annotated[str, typer.Argument(help=_("Words to look for (name, family, description, licence)."))] = "",
    as_json: JsonOpt = False,
) -> None:
    from internlocal.hub.registry import load_registry

    hits = load_registry().search(text)
    if as_json:
        print_json(
            [
                {
                    "name": m.name,
                    "family": f.family,
                    "description": m.description,
                    "parameters_b": m.parameters_b,
                    "context_length": m.context_length,
                    "license": m.license,
                    "gated": m.gated,
                    "vision": m.vision,
                    "projector": m.gguf.projector.file if m.gguf and m.gguf.projector else None,
                    "tags": m.tags,
                    "default_tag": m.default,
                    "hf": m.hf,
                    "modelscope": m.modelscope,
                    "size_gb": {t: m.size_gb(t) for t in m.tags},
                    "memory_gb": {t: m.memory_gb(t) for t in m.tags},
                }
                for f, m in hits
            ]
        )
        return
    table = _table(
        _("name"), _("vision"), _("params"), _("ctx"), _("default"), _("size"), _("memory"), _("licence"), _("tags")
    )
    for __, m in hits:
        tag = m.default
        table.add_row(
            m.name,
            _("vision") if m.vision else "-",
            f"{m.parameters_b:g}B",
            str(m.context_length),
            tag,
            f"{m.size_gb(tag) or '-'} GB",
            f"{m.memory_gb(tag) or '-'} GB",
            m.license.split(" ")[0] + (" " + _("(gated)") if m.gated else ""),
            " ".join(m.tags),
        )
    _console().print(table)
    typer.echo(_("pull one with: internlocal models pull NAME[:TAG]"))


@app.command("pull", help=_("Download a model (resumable, verified) into the store and the catalog."))
def pull(
    spec: Annotated[
        str,
        typer.Argument(
            help=_("NAME[:TAG] from the registry, hf:org/repo[:FILE][@REV], modelscope:org/repo[:FILE], or a URL")
        ),
    ],
    name: Annotated[str | None, typer.Option("--name", help=_("Catalog name for the model."))] = None,
    hub: Annotated[str | None, typer.Option("--hub", help=_("hf or modelscope, for registry names."))] = None,
    parts: Annotated[int, typer.Option(help=_("Parallel ranged connections for big files."))] = 4,
    detach: DetachOpt = False,
    as_json: JsonOpt = False,
) -> None:
    from internlocal.services.models import start_pull

    _follow(start_pull(services(), spec, name=name, hub=hub, parts=parts), detach=detach, as_json=as_json)


@app.command("import", help=_("Add a model file you already have to the catalog."))
def import_(
    path: Annotated[str, typer.Argument(help=_("A .gguf file or a Hugging Face model folder."))],
    name: Annotated[str | None, typer.Option("--name", help=_("Catalog name (default: from the file name)."))] = None,
    copy: Annotated[
        bool, typer.Option("--copy", help=_("Copy into the store instead of referencing the file where it is."))
    ] = False,
    mmproj: Annotated[
        str | None,
        typer.Option("--mmproj", help=_("The projector (mmproj .gguf) of a GGUF vision model, registered with it.")),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    from pathlib import Path

    from internlocal.hub.library import import_model
    from internlocal.hub.store import Store

    svc = services()
    model = import_model(
        svc.catalog,
        Store(svc.settings.store_dir),
        Path(path),
        name=name,
        copy=copy,
        mmproj=Path(mmproj) if mmproj else None,
    )
    if as_json:
        print_json({**model.summary(), "projector": model.projector_path})
        return
    typer.echo(
        _("{name}: imported ({storage}, {path})").format(
            name=model.name, storage=label(STORAGE_LABELS, model.storage), path=model.path
        )
    )
    if model.projector_path:
        typer.echo(_("vision: reads images through the projector {path}").format(path=model.projector_path))


@app.command(
    "add-remote",
    help=_("Chat with a model on another server (Ollama, vLLM, LMDeploy, internlocal) as if it were local."),
)
def add_remote(
    name: Annotated[str, typer.Argument(help=_("Catalog name for the endpoint."))],
    url: Annotated[str, typer.Argument(help=_("Base URL of an OpenAI-compatible server, e.g. http://host:11434/v1"))],
    model: Annotated[
        str | None, typer.Option("--model", help=_("Model id on that server (default: its first)."))
    ] = None,
    api_key_env: Annotated[
        str | None, typer.Option("--api-key-env", help=_("Environment variable holding its API key."))
    ] = None,
    embedding: Annotated[
        bool, typer.Option("--embedding", help=_("An embeddings endpoint (for knowledge bases), not a chat model."))
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    from internlocal.hub.library import add_remote as add

    entry = add(
        services().catalog, name, url, model=model, api_key_env=api_key_env, kind="embedding" if embedding else "chat"
    )
    print_json(entry.summary()) if as_json else typer.echo(
        f"{entry.name}: {entry.path} ({entry.metadata_dict['remote_model']})"
    )


@app.command("rm", help=_("Remove models; store files go when no other model uses them, your own files are kept."))
def rm(names: Annotated[list[str], typer.Argument(help=_("Models to remove."))], as_json: JsonOpt = False) -> None:
    from internlocal.hub.library import remove_model
    from internlocal.hub.store import Store

    svc = services()
    store = Store(svc.settings.store_dir)
    results = [remove_model(svc.catalog, store, name) for name in names]
    if as_json:
        print_json(results)
        return
    for r in results:
        extra = (
            _(", kept your file {path}").format(path=r["kept_file"])
            if r["kept_file"]
            else _(", {count} file(s) deleted").format(count=len(r["blobs_removed"]))
        )
        if r.get("projectors_removed"):
            extra += _("; its projector {names} went with it").format(names=", ".join(r["projectors_removed"]))
        typer.echo(_("{model}: removed{extra}").format(model=r["model"], extra=extra))


@app.command("du", help=_("Disk usage of the store and of each model."))
def du(as_json: JsonOpt = False) -> None:
    from internlocal.hub.library import disk_usage
    from internlocal.hub.store import Store

    svc = services()
    usage = disk_usage(svc.catalog, Store(svc.settings.store_dir))
    if as_json:
        print_json(usage)
        return
    table = _table(_("name"), _("storage"), _("size"), _("in store"))
    for m in usage["models"]:
        table.add_row(
            m["name"],
            label(STORAGE_LABELS, m["storage"]),
            human_bytes(m["size_bytes"]),
            human_bytes(m["in_store_bytes"]) if m["in_store_bytes"] else "-",
        )
    _console().print(table)
    typer.echo(
        _("store {store}: {size} (shared files counted once), partial downloads {partial}, free {free}").format(
            store=usage["store"],
            size=human_bytes(usage["store_bytes"]),
            partial=human_bytes(usage["partial_bytes"]),
            free=human_bytes(usage["free_bytes"]),
        )
    )


@app.command("convert", help=_("Convert between GGUF and Hugging Face formats (a new model, linked to its parent)."))
def convert(
    name: Annotated[str, typer.Argument(help=_("Catalog model to convert."))],
    to: Annotated[str, typer.Option("--to", help=_("hf (safetensors folder, for finetuning) or gguf."))],
    outtype: Annotated[
        str, typer.Option("--outtype", help=_("GGUF: f16, bf16, q8_0, f32. HF: bfloat16, float16, float32."))
    ] = "",
    out: Annotated[str | None, typer.Option("--name", help=_("Name of the new model."))] = None,
    detach: DetachOpt = False,
    as_json: JsonOpt = False,
) -> None:
    from internlocal.services.models import start_convert

    _follow(start_convert(services(), name, to, outtype=outtype, name=out), detach=detach, as_json=as_json)


@app.command(
    "quantize",
    help=_(
        "Quantize a model: GGUF types with llama.cpp, or AWQ W4A16 with LMDeploy (a new model, linked to its parent)."
    ),
)
def quantize(
    name: Annotated[str, typer.Argument(help=_("Catalog GGUF model to quantize."))],
    qtype: Annotated[str, typer.Option("--type", "-t", help="Q4_K_M, Q5_K_M, Q8_0, Q4_0, Q6_K, …")] = "Q4_K_M",
    method: Annotated[
        str, typer.Option("--method", help=_("gguf (llama.cpp) or awq (LMDeploy W4A16, NVIDIA)."))
    ] = "gguf",
    out: Annotated[str | None, typer.Option("--name", help=_("Name of the new model."))] = None,
    detach: DetachOpt = False,
    as_json: JsonOpt = False,
) -> None:
    from internlocal.services.models import start_quantize

    _follow(start_quantize(services(), name, qtype, method=method, name=out), detach=detach, as_json=as_json)


@app.command("verify", help=_("Re-hash model files (a background job) and report any that changed or went missing."))
def verify(
    names: Annotated[list[str] | None, typer.Argument(help=_("Models to check (default: all)."))] = None,
    detach: DetachOpt = False,
    as_json: JsonOpt = False,
) -> None:
    from internlocal.cli.progress import follow
    from internlocal.services.models import start_verify

    svc = services()
    job = start_verify(svc, names)
    if detach:
        print_json({"job": job.id}) if as_json else typer.echo(
            _("job {id} started; `internlocal jobs watch {id}`").format(id=job.id)
        )
        return
    job = follow(svc.jobs, job.id, as_json=as_json)
    if not as_json:
        for name, status in (job.result or {}).items():
            typer.echo(f"{pad(label(VERIFY_LABELS, status), 9)} {name}")
        if job.error:
            typer.echo(_("error: {error}").format(error=job.error), err=True)
    bad = job.status != "succeeded" or any(v != "ok" for v in (job.result or {}).values())
    raise typer.Exit(1 if bad else 0)
