"""Job: pull a model (registry name, hf:, modelscope:, URL) into the store and the catalog.

Progress is in bytes over all files of the model. Files already in the store (another model
shares them) or in the user's Hugging Face cache are not downloaded again. Cancel or a crash
keeps partial files; running the same pull again (or resuming the job) continues them.

A vision GGUF comes with its projector (mmproj): one job downloads both, with one progress, and
only when every file is here are they registered — the projector as its own row (``kind="projector"``,
shared by the quantizations that use the same file), the model with ``vision``/``projector`` in its
metadata and a ``projector`` lineage edge. A failed download registers nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from internlocal.errors import ModelFileError, UserError
from internlocal.hub.download import Downloader, DownloadError, RemoteFile
from internlocal.hub.files import sha256_file
from internlocal.hub.inspect import read_gguf
from internlocal.hub.library import (
    is_projector,
    link_projector,
    projector_metadata,
    projector_with_sha256,
    register,
    unique_name,
)
from internlocal.hub.sources import Resolved, resolve
from internlocal.hub.store import Manifest, ManifestFile, Store, check_model_name
from internlocal.i18n import _
from internlocal.jobs.context import JobContext
from internlocal.jobs.locks import exclusive

DISK_MARGIN = 512 << 20


def pull_model(
    ctx: JobContext, spec: str, name: str | None = None, hub: str | None = None, parts: int = 4
) -> dict[str, Any]:
    settings = ctx.settings
    ctx.log(f"resolving {spec}")
    resolved = resolve(spec, hub or settings.hub)
    name = check_model_name(name) if name else resolved.default_name
    # the same pull started twice: the second waits, then finds the model registered (one download, one record)
    what = _("a pull of {name}").format(name=name)
    with exclusive(settings.store_dir / "locks" / f"pull-{name}.lock", what, wait=True, ctx=ctx):
        return _pull_locked(ctx, spec, resolved, name, parts)


def _pull_locked(ctx: JobContext, spec: str, resolved: Resolved, name: str, parts: int) -> dict[str, Any]:
    settings, catalog = ctx.settings, ctx.catalog
    store = Store(settings.store_dir)
    if catalog.has_model(name):
        existing = catalog.get_model(name)
        if existing.source == resolved.source or existing.source == spec:
            return {"model": name, "status": "already present", "bytes": 0}
        raise UserError(
            _("A model named {name!r} is already in the catalog; pull with --name to choose another.").format(name=name)
        )
    if not resolved.files:
        raise UserError(_("{spec} lists no files to download.").format(spec=spec))
    wanted = resolved.files + ([resolved.projector] if resolved.projector else [])
    _check_disk(store, wanted)

    total = sum(f.size or 0 for f in wanted) or None
    done = 0
    downloaded = 0
    current = ""

    def on_bytes(n: int) -> None:
        nonlocal done, downloaded
        done += n
        downloaded += n
        ctx.progress(done, total, unit="bytes", message=current)

    downloader = Downloader(store, parts=parts)

    def fetch(remote: RemoteFile) -> ManifestFile:
        nonlocal current, done
        current = remote.path
        ctx.check_cancelled()
        digest = _from_store_or_cache(store, resolved, remote)
        if digest is not None:
            done += remote.size or 0
            ctx.progress(done, total, unit="bytes", message=_("{path} (already here)").format(path=remote.path))
        else:
            before = downloaded
            __, digest = downloader.fetch(remote, on_bytes, ctx.check_cancelled)
            ctx.log(f"{remote.path}: {downloaded - before} bytes downloaded, sha256 {digest[:12]}… verified")
        return ManifestFile(path=remote.path, digest=f"sha256-{digest}", size=store.blob_path(digest).stat().st_size)

    # every file first (model and projector): nothing is registered until all of them are here
    entries = [fetch(remote) for remote in sorted(resolved.files, key=lambda f: f.path)]
    projector_entry = fetch(resolved.projector) if resolved.projector else None

    projector, created = (None, False)
    if projector_entry is not None:
        projector, created = _register_projector(ctx, store, spec, resolved, projector_entry)
    manifest = Manifest(name=name, source=resolved.source, files=entries, metadata=resolved.metadata)
    extra = {**resolved.metadata, **(projector_metadata(projector) if projector else {})}
    try:
        store.write_manifest(manifest)
        model_path = store.model_path(manifest)
        model = register(
            catalog,
            name=name,
            path=model_path,
            storage="store",
            source=resolved.source,
            sha256=manifest.model_sha256(),
            extra=extra,
        )
        if projector is not None:
            link_projector(catalog, projector, model)
    except BaseException as exc:
        store.remove_manifest(name)  # not a model after all: nothing of it stays
        if created and projector is not None:
            store.remove_manifest(projector.name)
            catalog.delete_model(projector.id)
        if isinstance(exc, ModelFileError):
            raise ModelFileError(
                _("{spec} downloaded, but it is not a usable model: {exc}").format(spec=spec, exc=exc)
            ) from None
        raise
    ctx.progress(total or done, total or done, unit="bytes", message=_("done"))
    return {
        "model": model.name,
        "status": "pulled",
        "bytes": downloaded,
        "files": len(entries) + (1 if projector_entry else 0),
        "path": model.path,
        "source": resolved.source,
        **({"projector": projector.name, "projector_path": projector.path} if projector else {}),
    }


def _register_projector(ctx: JobContext, store: Store, spec: str, resolved: Resolved, entry: ManifestFile):
    """The catalog row of a pulled projector: one already there with the same bytes, or a new one (``kind=
    "projector"``, its own manifest, named after its file). Returns (row, whether it was created here)."""
    catalog, settings = ctx.catalog, ctx.settings
    digest = entry.digest.removeprefix("sha256-")
    with exclusive(settings.store_dir / "locks" / f"projector-{digest[:16]}.lock", _("a projector's registration"),
                   wait=True, ctx=ctx):  # fmt: skip
        existing = projector_with_sha256(catalog, digest)
        if existing is not None:
            return existing, False
        info = read_gguf(store.blob_path(digest))
        if not is_projector(info):
            raise ModelFileError(
                _(
                    "{spec}: {path} is not a projector (its GGUF architecture is {architecture!r}, "
                    "not 'clip'); nothing was registered."
                ).format(spec=spec, path=entry.path, architecture=info.architecture)
            )
        name = unique_name(catalog, entry.path.rsplit("/", 1)[-1].removesuffix(".gguf"))
        manifest = Manifest(
            name=name, source=resolved.projector_source or resolved.source, files=[entry], metadata={"projector": True}
        )
        store.write_manifest(manifest)
        try:
            row = register(
                catalog,
                name=name,
                path=store.model_path(manifest),
                storage="store",
                source=manifest.source,
                sha256=digest,
                info=info,
                kind="projector",
                extra={k: v for k, v in resolved.metadata.items() if k in ("repo", "revision", "registry", "license")},
            )
        except BaseException:
            store.remove_manifest(name)
            raise
        return row, True


def _from_store_or_cache(store: Store, resolved: Resolved, remote: RemoteFile) -> str | None:
    """The sha256 of a file we need not download: already a blob, or in the Hugging Face cache."""
    if remote.sha256 and store.has_blob(remote.sha256, remote.size):
        return remote.sha256
    if resolved.hf_repo is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(resolved.hf_repo[0], remote.path, revision=resolved.hf_repo[1])
    if not isinstance(cached, str) or not Path(cached).is_file():
        return None
    if remote.size is not None and Path(cached).stat().st_size != remote.size:
        return None
    digest = sha256_file(Path(cached))
    if remote.sha256 and digest != remote.sha256:
        return None
    store.add_blob(Path(cached), digest, move=False)  # hard link into the store when on the same disk
    return digest


def _check_disk(store: Store, files: list[RemoteFile]) -> None:
    need = sum((f.size or 0) for f in files if not (f.sha256 and store.has_blob(f.sha256, f.size)))
    free = shutil.disk_usage(store.root).free
    if need + DISK_MARGIN > free:
        from internlocal.formatting import human_bytes

        raise DownloadError(
            _(
                "This model needs {need}, and {margin} are kept free beside it, but only "
                "{free} is free in {root}; free some space (`internlocal models du`, `models rm`) or "
                "set INTERNLOCAL_HOME to a bigger disk."
            ).format(need=human_bytes(need), margin=human_bytes(DISK_MARGIN), free=human_bytes(free), root=store.root)
        )
