"""The user's model library: store and catalog kept in step (register, import, remove, disk usage)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from internlocal.catalog.catalog import Catalog
from internlocal.catalog.schema import Model
from internlocal.errors import ModelFileError, NetworkError, UserError
from internlocal.hub.files import path_size, sha256_file, sha256_path
from internlocal.hub.inspect import ModelFileInfo, read_gguf, read_hf_dir
from internlocal.hub.store import Manifest, ManifestFile, Store, check_model_name
from internlocal.i18n import _

# how a model's family is guessed from its architecture or name when nothing says otherwise
_FAMILIES = (
    ("internlm3", "internlm3"),
    ("internlm2", "internlm2_5"),
    ("internlm", "internlm"),
    ("qwen2", "qwen2.5"),
    ("qwen", "qwen"),
    ("smollm", "smollm2"),
    ("llama", "llama"),
    ("mistral", "mistral"),
    ("bert", "bert"),
)


def guess_family(*hints: str | None) -> str | None:
    text = " ".join(h for h in hints if h).lower()
    return next((family for key, family in _FAMILIES if key in text), None)


PROJECTOR_ARCHITECTURE = "clip"  # llama.cpp's projector GGUFs (mmproj) say general.architecture = clip
PROJECTOR_EDGE = "projector"  # lineage operation: (model, projector) --projector--> (model, vision model)


def is_projector(info: ModelFileInfo) -> bool:
    return info.format == "gguf" and (info.architecture or "").lower() == PROJECTOR_ARCHITECTURE


def inspect_path(path: Path) -> ModelFileInfo:
    path = Path(path)
    if path.is_dir():
        return read_hf_dir(path)
    if path.suffix.lower() != ".gguf":
        with path.open("rb") as fh:
            if fh.read(4) != b"GGUF":
                raise ModelFileError(
                    _("{path} is neither a GGUF file nor a Hugging Face model folder.").format(path=path)
                )
    return read_gguf(path)


def model_fields(
    info: ModelFileInfo,
    *,
    path: Path,
    storage: str,
    source: str,
    sha256: str | None,
    family: str | None = None,
    kind: str | None = None,
    chat_template: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Catalog columns for a model file, from what the file says about itself."""
    if kind is None and is_projector(info):
        kind = "projector"  # never offered for chat: a vision model's half, linked to it by a lineage edge
    if kind is None:
        kind = "embedding" if (info.architecture or "").lower().startswith(("bert", "xlmroberta")) else "chat"
        if kind == "chat" and not (info.chat_template or chat_template) and info.format == "gguf":
            kind = "base"
    metadata = dict(info.metadata)
    if info.format == "gguf" and "sampling" not in metadata:
        from internlocal.hub.inspect import gguf_sampling

        found = gguf_sampling(info.metadata)
        if found:
            metadata["sampling"] = found
    metadata.update(extra or {})
    return dict(
        family=family or guess_family(info.architecture, info.name, path.name),
        kind=kind,
        format=info.format,
        architecture=info.architecture,
        quantization=info.quantization,
        parameters=info.parameters,
        context_length=info.context_length,
        path=str(path),
        storage=storage,
        size_bytes=path_size(path),
        sha256=sha256,
        source=source,
        chat_template=info.chat_template or chat_template,
        metadata_json=json.dumps(metadata, ensure_ascii=False, sort_keys=True, default=str),
    )


def register(
    catalog: Catalog,
    *,
    name: str,
    path: Path,
    storage: str,
    source: str,
    sha256: str | None,
    info: ModelFileInfo | None = None,
    extra: dict[str, Any] | None = None,
    parent: Model | None = None,
    operation: str | None = None,
    params: dict | None = None,
    kind: str | None = None,
) -> Model:
    """Add a model to the catalog from what its file says about itself (and link it to its parent)."""
    info = info or inspect_path(path)
    fields = model_fields(
        info,
        path=Path(path),
        storage=storage,
        source=source,
        sha256=sha256,
        family=(extra or {}).get("family") or guess_family(info.architecture, info.name, name),
        kind=kind,
        chat_template=parent.chat_template if parent else None,
        extra=extra,
    )
    model = catalog.add_model(Model(name=name, **fields))
    if parent is not None and operation:
        catalog.add_lineage(("model", parent.id), ("model", model.id), operation, params or {})
    return model


def unique_name(catalog: Catalog, wanted: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._:+-]+", "-", wanted).strip("-.").lower()[:120] or "model"
    name, n = base, 2
    while catalog.has_model(name):
        name, n = f"{base}-{n}", n + 1
    return check_model_name(name)


def add_to_store(
    store: Store, name: str, source: str, files: list[tuple[Path, str]], *, move: bool, metadata: dict | None = None
) -> tuple[Manifest, Path]:
    """Put files (``(local file, path inside the model)``) into the store under ``name``."""
    entries = []
    for local, rel in files:
        digest = sha256_file(local)
        store.add_blob(local, digest, move=move)
        entries.append(ManifestFile(path=rel, digest=f"sha256-{digest}", size=store.blob_path(digest).stat().st_size))
    manifest = Manifest(name=name, source=source, files=entries, metadata=metadata or {})
    store.write_manifest(manifest)
    return manifest, store.model_path(manifest)


# -- vision models: a GGUF and its projector ------------------------------------------------------


def check_projector(path: Path) -> ModelFileInfo:
    """What a projector file says about itself; a ``UserError`` sentence when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(_("{path} does not exist; give the path of the model's mmproj .gguf file.").format(path=path))
    try:
        info = read_gguf(path)
    except ModelFileError:
        raise UserError(
            _("{path} is not a projector (not a readable GGUF file); give the model's mmproj file.").format(path=path)
        ) from None
    if not is_projector(info):
        raise UserError(
            _(
                "{path} is not a projector: its GGUF architecture is {architecture!r}, not 'clip'; give the model's "
                "mmproj file."
            ).format(path=path, architecture=info.architecture)
        )
    return info


def projector_metadata(projector: Model) -> dict[str, Any]:
    """What a vision model's row says about its projector (``Model.vision``, ``Model.projector_path``)."""
    return {"vision": True, "projector": projector.path}


def link_projector(catalog: Catalog, projector: Model, model: Model) -> None:
    catalog.add_lineage(("model", projector.id), ("model", model.id), PROJECTOR_EDGE, {})


def projector_with_sha256(catalog: Catalog, sha256: str | None) -> Model | None:
    """A projector already in the catalog with these bytes (two quantizations of a model share one)."""
    if not sha256:
        return None
    return next((m for m in catalog.list_models(kind="projector") if m.sha256 == sha256), None)


def _model_by_id(catalog: Catalog, model_id: int) -> Model | None:
    found = catalog.find_model(model_id)
    return found if found is not None and found.id == model_id else None


# Lineage edges outlive deleted rows and SQLite reuses the highest ids, so an edge is believed only when both
# ends still agree: the parent is a projector and the model's metadata names that projector's file.


def _links(projector: Model | None, model: Model | None) -> bool:
    return (
        projector is not None
        and model is not None
        and projector.kind == "projector"
        and model.projector_path == projector.path
    )


def projector_users(catalog: Catalog, projector: Model, *, besides: int | None = None) -> list[Model]:
    """The models in the catalog that read images through ``projector`` (other than the one ``besides``)."""
    users = []
    for edge in catalog.children(("model", projector.id)):
        if edge.operation == PROJECTOR_EDGE and edge.child_type == "model" and edge.child_id != besides:
            found = _model_by_id(catalog, edge.child_id)
            if found is not None and _links(projector, found):
                users.append(found)
    return users


def projectors_of(catalog: Catalog, model: Model) -> list[Model]:
    found = []
    for edge in catalog.parents(("model", model.id)):
        if edge.operation == PROJECTOR_EDGE and edge.parent_type == "model":
            projector = _model_by_id(catalog, edge.parent_id)
            if projector is not None and _links(projector, model):
                found.append(projector)
    return found


def _drop(catalog: Catalog, store: Store, model: Model) -> list[str]:
    """Remove a row and, when the store owns it, its manifest and unshared blobs."""
    removed = store.remove_manifest(model.name) if model.storage == "store" else []
    catalog.delete_model(model.id)
    return removed


def import_model(
    catalog: Catalog,
    store: Store,
    path: Path,
    *,
    name: str | None = None,
    copy: bool = False,
    mmproj: Path | None = None,
) -> Model:
    """Register a GGUF file or HF folder the user has: by reference (default) or copied into the store.

    ``mmproj``: the projector of a GGUF vision model, registered with it (its own row, ``kind="projector"``,
    linked by a lineage edge) and named in the model's metadata. Both files are checked before anything is written.
    """
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise UserError(_("{path} does not exist; give the path of a .gguf file or a model folder.").format(path=path))
    info = inspect_path(path)  # refuses non-models before anything is written
    projector_info = None
    if mmproj is not None:
        mmproj = Path(mmproj).expanduser().resolve()
        if info.format != "gguf":
            raise UserError(
                _("--mmproj goes with a GGUF model; {path} is a Hugging Face folder, which needs none.").format(
                    path=path
                )
            )
        if is_projector(info):
            raise UserError(
                _("{path} is itself a projector; import the text model with --mmproj {file}.").format(
                    path=path, file=path.name
                )
            )
        projector_info = check_projector(mmproj)
    name = check_model_name(name) if name else unique_name(catalog, path.stem if path.is_file() else path.name)
    if catalog.has_model(name):
        raise UserError(
            _("A model named {name!r} is already in the catalog; choose another with --name.").format(name=name)
        )
    if mmproj is None or projector_info is None:
        return _import_one(catalog, store, path, name=name, copy=copy, info=info)
    projector = projector_with_sha256(catalog, sha256_path(mmproj))
    created = projector is None
    if projector is None:
        projector = _import_one(
            catalog, store, mmproj, name=unique_name(catalog, mmproj.stem), copy=copy, info=projector_info
        )
    try:
        model = _import_one(catalog, store, path, name=name, copy=copy, info=info, extra=projector_metadata(projector))
        link_projector(catalog, projector, model)
    except BaseException:
        if created:  # nothing of a failed import stays
            _drop(catalog, store, projector)
        raise
    return model


def _import_one(
    catalog: Catalog,
    store: Store,
    path: Path,
    *,
    name: str,
    copy: bool,
    info: ModelFileInfo,
    extra: dict[str, Any] | None = None,
) -> Model:
    if not copy:
        return register(
            catalog,
            name=name,
            path=path,
            storage="reference",
            source=f"import:{path}",
            sha256=sha256_path(path),
            info=info,
            extra=extra,
        )
    if path.is_dir():
        files = [
            (f, f.relative_to(path).as_posix())
            for f in sorted(path.rglob("*"))
            if f.is_file() and not any(part.startswith(".") for part in f.relative_to(path).parts)
        ]
    else:
        files = [(path, path.name)]
    manifest, model_path = add_to_store(store, name, f"import:{path}", files, move=False)
    digest = manifest.files[0].digest.removeprefix("sha256-") if path.is_file() else sha256_path(model_path)
    try:
        return register(
            catalog,
            name=name,
            path=model_path,
            storage="store",
            source=f"import:{path}",
            sha256=digest,
            info=info,
            extra=extra,
        )
    except BaseException:
        store.remove_manifest(name)
        raise


def remove_model(catalog: Catalog, store: Store, ref: str) -> dict[str, Any]:
    """Remove a model from the catalog and, if the store owns it, its manifest and unshared blobs.

    A user's own files (imported by reference) are never deleted; embedded models cannot be
    removed (they come back on the next start). A vision model's projector goes with it when no
    other model uses it; a projector still in use is not removed on its own.
    """
    model = catalog.get_model(ref)
    if (model.source or "").startswith("embedded:"):
        raise UserError(_("{name} is built into the installation and cannot be removed.").format(name=model.name))
    if model.kind == "projector":
        users = projector_users(catalog, model)
        if users:
            names = ", ".join(u.name for u in users)
            raise UserError(
                _("{name} is the projector of {names}; remove that model and its projector goes too.").format(
                    name=model.name, names=names
                )
            )
    projectors = projectors_of(catalog, model)
    removed = _drop(catalog, store, model)
    dropped = []
    for projector in projectors:
        if not projector_users(catalog, projector, besides=model.id):
            removed += _drop(catalog, store, projector)
            dropped.append(projector.name)
    return {
        "model": model.name,
        "storage": model.storage,
        "blobs_removed": removed,
        "kept_file": model.path if model.storage == "reference" and model.format != "remote" else None,
        "projectors_removed": dropped,
    }


def disk_usage(catalog: Catalog, store: Store) -> dict[str, Any]:
    usage = store.usage()
    models = []
    for m in catalog.list_models():
        models.append(
            {
                "name": m.name,
                "storage": m.storage,
                "size_bytes": m.size_bytes,
                "in_store_bytes": usage["models"].get(m.name, 0),
            }
        )
    return {
        "models": models,
        "store_bytes": usage["blobs_bytes"],
        "partial_bytes": usage["partial_bytes"],
        "free_bytes": usage["free_bytes"],
        "store": str(store.root),
    }


def add_remote(
    catalog: Catalog,
    name: str,
    url: str,
    *,
    model: str | None = None,
    api_key_env: str | None = None,
    kind: str = "chat",
) -> Model:
    """Register an OpenAI-compatible endpoint as a chat (or ``embedding``) model; the key stays in the environment."""
    import os

    import requests

    check_model_name(name)
    if catalog.has_model(name):
        raise UserError(_("A model named {name!r} is already in the catalog; choose another name.").format(name=name))
    base = url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    key = os.environ.get(api_key_env) if api_key_env else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = requests.get(f"{base}/models", headers=headers, timeout=10)
    except requests.RequestException as exc:
        raise NetworkError(
            _("Cannot reach {base} ({exc}); check the URL and that the server runs.").format(base=base, exc=exc)
        ) from None
    if response.status_code in (401, 403):
        raise UserError(
            _("{base} refused the request ({status}); pass --api-key-env with the key's variable.").format(
                base=base, status=response.status_code
            )
        )
    if response.status_code >= 400:
        raise UserError(
            _("{base}/models answered {status}; is this an OpenAI-compatible server?").format(
                base=base, status=response.status_code
            )
        )
    served = [m.get("id") for m in response.json().get("data", [])]
    if model is None:
        if not served:
            raise UserError(_("{base} lists no models; give one with --model.").format(base=base))
        model = served[0]
    elif served and model not in served:
        raise UserError(
            _("{base} does not serve {model!r}; it serves {served}.").format(
                base=base, model=model, served=", ".join(served)
            )
        )
    return catalog.add_model(
        Model(
            name=name,
            family=guess_family(model),
            kind=kind,
            format="remote",
            path=base,
            storage="reference",
            source=f"remote:{base}",
            metadata_json=json.dumps({"remote_model": model, "api_key_env": api_key_env}),
        )
    )
