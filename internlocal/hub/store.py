"""The model store: content-addressed blobs plus one manifest per model (Ollama's layout).

    store/blobs/sha256-<hex>              file contents, stored once however many models use them
    store/manifests/<model>.json          {"name", "source", "files": [{"path", "digest", "size"}]}
    store/models/<model>/<path>           symlinks to the blobs, with the file names tools expect
    store/partial/                        downloads in progress (see download.py)

Order of writes keeps the store consistent after a crash at any point: blobs are complete
(renamed into place) before a manifest names them; a manifest is removed before its blobs, so a
manifest never points at a missing file (a crash can only leave an unreferenced blob, which
``gc()`` removes).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from internlocal.errors import UserError
from internlocal.i18n import _

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")


@dataclass
class ManifestFile:
    path: str  # relative path inside the model, e.g. "model-00001-of-00002.safetensors"
    digest: str  # "sha256-<hex>"
    size: int


@dataclass
class Manifest:
    name: str
    source: str
    files: list[ManifestFile] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def model_sha256(self) -> str:
        """The catalog's sha256 of the model: the file's for one file, else ``files.sha256_dir``'s tree hash."""
        if len(self.files) == 1:
            return self.files[0].digest.removeprefix("sha256-")
        lines = "".join(
            f"{f.path}\0{f.digest.removeprefix('sha256-')}\n"
            for f in sorted(self.files, key=lambda f: f.path)
            if not any(part.startswith(".") for part in f.path.split("/"))
        )
        return hashlib.sha256(lines.encode()).hexdigest()

    @classmethod
    def load(cls, path: Path) -> Manifest:
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            name=data["name"],
            source=data["source"],
            files=[ManifestFile(**f) for f in data["files"]],
            metadata=data.get("metadata", {}),
        )


def check_model_name(name: str) -> str:
    if not _NAME.match(name) or ".." in name:
        raise UserError(
            _("{name!r} cannot be a model name; use letters, digits and . _ - : + (up to 128 characters).").format(
                name=name
            )
        )
    return name


def safe_relative_path(path: str) -> str:
    """A remote file name as a path inside a model folder; traversal and absolute paths are refused."""
    pure = PurePosixPath(path.replace("\\", "/"))
    if not path or pure.is_absolute() or any(part in ("..", "") for part in pure.parts) or ":" in pure.parts[0]:
        raise UserError(
            _("The remote file name {path!r} would escape the model folder; refusing to download it.").format(path=path)
        )
    return pure.as_posix()


class Store:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.manifests = self.root / "manifests"
        self.models = self.root / "models"
        self.partial = self.root / "partial"
        for d in (self.blobs, self.manifests, self.models, self.partial):
            d.mkdir(parents=True, exist_ok=True)

    # -- blobs -------------------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        return self.blobs / f"sha256-{sha256}"

    def has_blob(self, sha256: str | None, size: int | None = None) -> bool:
        if not sha256:
            return False
        path = self.blob_path(sha256)
        return path.is_file() and (size is None or path.stat().st_size == size)

    def add_blob(self, file: Path, sha256: str, *, move: bool) -> Path:
        """Put a verified file into the store (rename when ``move``, else hard link or copy)."""
        target = self.blob_path(sha256)
        if target.exists():
            if move:
                Path(file).unlink()
            return target
        if move:
            os.replace(file, target)
            return target
        tmp = target.with_name(target.name + ".tmp")
        try:
            os.link(file, tmp)  # same filesystem: free and instant (e.g. from the Hugging Face cache)
        except OSError:
            shutil.copyfile(file, tmp)
        os.replace(tmp, target)
        return target

    # -- manifests ---------------------------------------------------------------------------------

    def manifest_path(self, name: str) -> Path:
        return self.manifests / f"{check_model_name(name)}.json"

    def model_dir(self, name: str) -> Path:
        return self.models / check_model_name(name)

    def write_manifest(self, manifest: Manifest) -> Path:
        """Record a model whose blobs are all present, and lay out its folder of links."""
        for f in manifest.files:
            safe_relative_path(f.path)
            if not self.blob_path(f.digest.removeprefix("sha256-")).is_file():
                raise UserError(
                    _("Blob {digest} of {name} is missing; pull the model again.").format(
                        digest=f.digest, name=manifest.name
                    )
                )
        folder = self.model_dir(manifest.name)
        tmp_folder = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp_folder, ignore_errors=True)
        for f in manifest.files:
            link = tmp_folder / f.path
            link.parent.mkdir(parents=True, exist_ok=True)
            blob = self.blob_path(f.digest.removeprefix("sha256-"))
            link.symlink_to(os.path.relpath(blob, link.parent))
        tmp_folder.mkdir(parents=True, exist_ok=True)
        path = self.manifest_path(manifest.name)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(manifest), ensure_ascii=False, indent=2), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp_folder, folder)
        os.replace(tmp, path)
        return path

    def read_manifest(self, name: str) -> Manifest | None:
        path = self.manifest_path(name)
        return Manifest.load(path) if path.exists() else None

    def all_manifests(self) -> list[Manifest]:
        out = []
        for path in sorted(self.manifests.glob("*.json")):
            try:
                out.append(Manifest.load(path))
            except (OSError, ValueError, KeyError):
                continue
        return out

    def model_path(self, manifest: Manifest) -> Path:
        """What engines open: the single GGUF file, or the model folder."""
        folder = self.model_dir(manifest.name)
        if any(f.path == "config.json" for f in manifest.files):
            return folder
        ggufs = sorted(f.path for f in manifest.files if f.path.endswith(".gguf"))
        if ggufs:  # a split GGUF opens from its first part (-00001-of-0000N sorts first)
            return folder / ggufs[0]
        return folder / manifest.files[0].path if len(manifest.files) == 1 else folder

    def remove_manifest(self, name: str) -> list[str]:
        """Delete a model's manifest and folder, then the blobs no other manifest uses; returns removed digests."""
        manifest = self.read_manifest(name)
        if manifest is None:
            return []
        self.manifest_path(name).unlink()
        shutil.rmtree(self.model_dir(name), ignore_errors=True)
        still_used = self.referenced_digests()
        removed = []
        for f in manifest.files:
            if f.digest not in still_used:
                self.blob_path(f.digest.removeprefix("sha256-")).unlink(missing_ok=True)
                removed.append(f.digest)
        return removed

    def referenced_digests(self) -> set[str]:
        return {f.digest for m in self.all_manifests() for f in m.files}

    def gc(self) -> int:
        """Remove blobs no manifest references (left by a crash between manifest and blob removal)."""
        used = self.referenced_digests()
        freed = 0
        for blob in self.blobs.glob("sha256-*"):
            if blob.name.endswith(".tmp") or blob.name not in used:
                freed += blob.stat().st_size
                blob.unlink()
        return freed

    def usage(self) -> dict[str, Any]:
        """Bytes per model (shared blobs counted once overall), plus partial downloads."""
        per_model = {}
        seen: set[str] = set()
        total = 0
        for m in self.all_manifests():
            size = sum(f.size for f in m.files)
            unique = sum(f.size for f in m.files if f.digest not in seen)
            seen.update(f.digest for f in m.files)
            total += unique
            per_model[m.name] = size
        # partial files are sparse (preallocated to full size): count the blocks actually written
        partial = sum(p.stat().st_blocks * 512 for p in self.partial.glob("*") if p.is_file())
        return {
            "models": per_model,
            "blobs_bytes": total,
            "partial_bytes": partial,
            "free_bytes": shutil.disk_usage(self.root).free,
        }
