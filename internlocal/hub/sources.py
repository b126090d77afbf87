"""Turning what a user asks to pull into a list of remote files.

Accepted forms:

    internlm2_5-7b-chat[:q4_k_m|:q8_0|:hf]    a registry name and tag (models/*.yaml)
    hf:org/repo[:file-or-glob][@revision]      Hugging Face Hub (HF_ENDPOINT, HF_TOKEN honoured)
    modelscope:org/repo[:file-or-glob][@rev]   ModelScope (MODELSCOPE_DOMAIN honoured)
    https://host/path/file.gguf[#sha256=HEX]   any URL

Whole repositories are fetched as Hugging Face directories (weights as safetensors plus
config and tokenizer files); a file or glob picks GGUF files (all parts of a split GGUF).
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlparse

from internlocal.errors import NetworkError, UserError
from internlocal.hub.download import DownloadError, RemoteFile
from internlocal.hub.registry import RegistryChoice, load_registry
from internlocal.hub.store import safe_relative_path
from internlocal.i18n import _

# files of a Hugging Face model directory worth fetching; other formats (.bin, .pt, onnx, gguf) are skipped
_HF_DIR_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.tiktoken", "*.txt", "*.py", "*.jinja", "tokenizer*")
_SPLIT_GGUF = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


class NoMatchingFile(UserError):
    """A file pattern that matches nothing in a repository (callers that try several patterns go on)."""


@dataclass
class Resolved:
    source: str  # canonical spec recorded in the catalog (e.g. "hf:org/repo:file@rev")
    default_name: str
    format: str  # gguf | hf
    files: list[RemoteFile]
    metadata: dict[str, Any] = field(default_factory=dict)
    hf_repo: tuple[str, str] | None = None  # (repo_id, revision) for Hugging Face cache reuse
    projector: RemoteFile | None = None  # a vision GGUF's mmproj, downloaded and registered with the model
    projector_source: str | None = None  # the projector's own canonical spec (its catalog row's source)


def parse_repo_spec(rest: str) -> tuple[str, str | None, str | None]:
    """``org/repo[:pattern][@revision]`` → (repo, pattern, revision)."""
    revision = None
    if "@" in rest:
        rest, revision = rest.rsplit("@", 1)
    repo, __, pattern = rest.partition(":")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise UserError(
            _("{repo!r} is not a repository id; write it as org/name, e.g. hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF.").format(
                repo=repo
            )
        )
    return repo, pattern or None, revision


def resolve(spec: str, hub: str = "hf") -> Resolved:
    spec = spec.strip()
    if spec.startswith("hf:"):
        return resolve_hf(*parse_repo_spec(spec[3:]))
    if spec.startswith("modelscope:") or spec.startswith("ms:"):
        return resolve_modelscope(*parse_repo_spec(spec.split(":", 1)[1]))
    if spec.startswith(("http://", "https://")):
        return resolve_url(spec)
    return resolve_choice(load_registry().choose(spec, hub))


def resolve_choice(choice: RegistryChoice) -> Resolved:
    """A registry name's choice → its files on the hub it names, under the registry's name and metadata (and, for
    a vision GGUF, its projector file from the same repository)."""
    resolver = resolve_hf if choice.hub == "hf" else resolve_modelscope
    resolved = resolver(choice.repo, choice.pattern, None, projector=choice.projector)
    resolved.default_name = choice.default_name
    resolved.metadata.update(choice.metadata)
    if resolved.projector is not None and choice.projector_sha256:
        published = resolved.projector.sha256
        if published and published != choice.projector_sha256:
            raise UserError(
                _(
                    "{repo} publishes {projector} with another sha256 than the registry states; the "
                    "file changed upstream, so it is not pulled (update models/*.yaml after checking it)."
                ).format(repo=choice.repo, projector=choice.projector)
            )
        resolved.projector.sha256 = choice.projector_sha256
    return resolved


def _split_projector(
    names: list[str], chosen: set[str], projector: str | None, repo: str
) -> tuple[set[str], str | None]:
    """The model's files without the projector, and the projector's name in the repository (None: not asked)."""
    if projector is None:
        return chosen, None
    if projector not in names:
        listed = ", ".join(n for n in names if "mmproj" in n.lower()) or _("none")
        raise UserError(
            _("{repo} has no projector file {projector!r}; its mmproj files: {listed}.").format(
                repo=repo, projector=projector, listed=listed
            )
        )
    return chosen - {projector}, projector


# -- plain URLs ------------------------------------------------------------------------------------


def resolve_url(url: str) -> Resolved:
    url, __, fragment = url.partition("#")
    sha256 = None
    if fragment.startswith("sha256="):
        sha256 = fragment.split("=", 1)[1].lower()
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise UserError(_("The #sha256= part of the URL is not a 64-character hex digest."))
    name = os.path.basename(urlparse(url).path)
    if not name:
        raise UserError(_("{url} does not end in a file name; give the URL of the file itself.").format(url=url))
    path = safe_relative_path(name)
    stem = re.sub(r"\.gguf$", "", path, flags=re.I)
    return Resolved(
        source=url,
        default_name=stem.lower(),
        format="gguf" if path.lower().endswith(".gguf") else "file",
        files=[RemoteFile(url=url, path=path, sha256=sha256)],
    )


# -- Hugging Face Hub ------------------------------------------------------------------------------


def hf_endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def resolve_hf(repo: str, pattern: str | None, revision: str | None, *, projector: str | None = None) -> Resolved:
    from huggingface_hub import HfApi
    from huggingface_hub.utils import build_hf_headers

    endpoint = hf_endpoint()
    token = os.environ.get("HF_TOKEN") or None
    api = HfApi(endpoint=endpoint, token=token)
    info = _hf_info(lambda: api.model_info(repo, revision=revision, files_metadata=True), repo, revision, endpoint)
    commit = info.sha or revision or "main"
    siblings = info.siblings or []
    names = [s.rfilename for s in siblings]
    chosen, projector = _split_projector(names, _choose_files(names, pattern, repo), projector, repo)
    base_url, headers = f"{endpoint}/{repo}/resolve/{commit}", build_hf_headers(token=token)
    files = _hf_files(siblings, chosen, base_url, headers)
    fmt = "gguf" if all(f.path.endswith(".gguf") for f in files) else "hf"
    return Resolved(
        source=f"hf:{repo}" + (f":{pattern}" if pattern else "") + f"@{commit}",
        default_name=_default_name(repo, files, fmt),
        format=fmt,
        files=files,
        metadata={"repo": repo, "revision": commit},
        hf_repo=(repo, commit),
        projector=_hf_files(siblings, {projector}, base_url, headers)[0] if projector else None,
        projector_source=f"hf:{repo}:{projector}@{commit}" if projector else None,
    )


def _hf_info(call, repo: str, revision: str | None, endpoint: str):
    """The repository's info from the Hub, with every failure turned into one sentence."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        return call()
    except GatedRepoError:
        raise UserError(
            _(
                "{repo} is gated: accept its licence on the model page, then set HF_TOKEN to a token with read access."
            ).format(repo=repo)
        ) from None
    except RepositoryNotFoundError:
        raise UserError(
            _("Hugging Face repository {repo} was not found (or is private: set HF_TOKEN).").format(repo=repo)
        ) from None
    except RevisionNotFoundError:
        raise UserError(_("{repo} has no revision {revision!r}.").format(repo=repo, revision=revision)) from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 404:
            raise UserError(
                _("Hugging Face repository {repo} was not found (or is private: set HF_TOKEN).").format(repo=repo)
            ) from None
        if status in (401, 403):
            raise UserError(
                _(
                    "The Hugging Face Hub refused access to {repo} ({status}); set HF_TOKEN to a token that can "
                    "read it."
                ).format(repo=repo, status=status)
            ) from None
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            _("The Hugging Face Hub at {endpoint} answered an error for {repo} ({error}).").format(
                endpoint=endpoint, repo=repo, error=first_line
            )
        ) from None
    except OSError as exc:
        raise NetworkError(
            _("Cannot reach the Hugging Face Hub at {endpoint} ({exc}); check the connection or HF_ENDPOINT.").format(
                endpoint=endpoint, exc=exc
            )
        ) from None


def _hf_files(siblings, chosen: set[str], base_url: str, headers: dict[str, str]) -> list[RemoteFile]:
    files = []
    for sibling in siblings:
        if sibling.rfilename not in chosen:
            continue
        lfs = sibling.lfs
        files.append(
            RemoteFile(
                url=f"{base_url}/{quote(sibling.rfilename)}",
                path=safe_relative_path(sibling.rfilename),
                size=sibling.size if sibling.size is not None else (lfs.size if lfs else None),
                sha256=lfs.sha256 if lfs else None,
                git_sha1=None if lfs else sibling.blob_id,
                headers=dict(headers),
            )
        )
    return files


def _choose_files(names: list[str], pattern: str | None, repo: str) -> set[str]:
    if pattern:
        chosen = {
            n
            for n in names
            if n == pattern or fnmatch.fnmatch(n, pattern) or fnmatch.fnmatch(n.lower(), pattern.lower())
        }
        if not chosen:
            listed = ", ".join(n for n in names if n.endswith(".gguf")) or _("none")
            raise UserError(
                _("No file in {repo} matches {pattern!r}; its GGUF files: {listed}.").format(
                    repo=repo, pattern=pattern, listed=listed
                )
            )
        # one part of a split GGUF brings the others
        for name in list(chosen):
            match = _SPLIT_GGUF.search(name)
            if match:
                prefix = name[: match.start()]
                chosen |= {n for n in names if n.startswith(prefix) and _SPLIT_GGUF.search(n)}
        return chosen
    wanted = {n for n in names if any(fnmatch.fnmatch(os.path.basename(n), p) for p in _HF_DIR_PATTERNS)}
    if not any(n.endswith(".safetensors") for n in wanted):
        ggufs = [n for n in names if n.endswith(".gguf")]
        if ggufs:
            raise UserError(
                _(
                    "{repo} has no safetensors weights to download as a model folder. "
                    "It has GGUF files: pick one with :FILE, e.g. hf:{repo}:{gguf}."
                ).format(repo=repo, gguf=ggufs[0])
            )
        raise UserError(_("{repo} has no safetensors weights to download as a model folder.").format(repo=repo))
    return wanted


def _default_name(repo: str, files: list[RemoteFile], fmt: str) -> str:
    if fmt == "gguf" and files:
        first = sorted(f.path for f in files)[0]
        stem = _SPLIT_GGUF.sub("", os.path.basename(first))
        return re.sub(r"\.gguf$", "", stem, flags=re.I).lower()
    return repo.split("/")[1].lower()


# -- ModelScope ------------------------------------------------------------------------------------


def modelscope_endpoint() -> str:
    domain = os.environ.get("MODELSCOPE_DOMAIN", "www.modelscope.cn").rstrip("/")
    return domain if domain.startswith(("http://", "https://")) else f"https://{domain}"


def _modelscope_headers() -> dict[str, str]:
    headers = {"User-Agent": "internlocal"}
    token = os.environ.get("MODELSCOPE_API_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _modelscope_get(url: str, params: dict[str, str], headers: dict[str, str], what: str) -> dict[str, Any]:
    import requests

    try:
        resp = requests.get(url, params=params, headers=headers, timeout=30)
    except requests.RequestException as exc:
        raise NetworkError(
            _("Cannot reach ModelScope at {endpoint} ({exc}); check the connection or MODELSCOPE_DOMAIN.").format(
                endpoint=modelscope_endpoint(), exc=exc
            )
        ) from None
    if resp.status_code in (401, 403):
        raise UserError(
            _(
                "ModelScope refused access to {what}; set MODELSCOPE_API_TOKEN for private or gated repositories."
            ).format(what=what)
        )
    if resp.status_code == 404:
        raise UserError(_("ModelScope {what} was not found.").format(what=what))
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if resp.status_code >= 400 or not body.get("Data"):
        raise UserError(
            _("ModelScope answered {status} for {what}: {message}.").format(
                status=resp.status_code, what=what, message=body.get("Message") or resp.text[:200]
            )
        )
    return body


def resolve_modelscope(
    repo: str, pattern: str | None, revision: str | None, *, projector: str | None = None
) -> Resolved:
    endpoint = modelscope_endpoint()
    revision = revision or "master"
    headers = _modelscope_headers()
    body = _modelscope_get(
        f"{endpoint}/api/v1/models/{repo}/repo/files",
        {"Revision": revision, "Recursive": "True"},
        headers,
        _("model {repo}").format(repo=repo),
    )
    entries = [f for f in body["Data"].get("Files", []) if f.get("Type", "blob") == "blob"]
    by_path = {f["Path"]: f for f in entries}
    chosen, projector = _split_projector(list(by_path), _choose_files(list(by_path), pattern, repo), projector, repo)

    def remote(path: str) -> RemoteFile:
        return RemoteFile(
            url=f"{endpoint}/api/v1/models/{repo}/repo?Revision={quote(revision)}&FilePath={quote(path)}",
            path=safe_relative_path(path),
            size=by_path[path].get("Size"),
            sha256=(by_path[path].get("Sha256") or None),
            headers=dict(headers),
        )

    files = [remote(path) for path in sorted(chosen)]
    fmt = "gguf" if all(f.path.endswith(".gguf") for f in files) else "hf"
    return Resolved(
        source=f"modelscope:{repo}" + (f":{pattern}" if pattern else "") + f"@{revision}",
        default_name=_default_name(repo, files, fmt),
        format=fmt,
        files=files,
        metadata={"repo": repo, "revision": revision},
        projector=remote(projector) if projector else None,
        projector_source=f"modelscope:{repo}:{projector}@{revision}" if projector else None,
    )


# -- dataset repositories (benchmarks, training data) -------------------------------------------------


def resolve_dataset(spec: str, default_pattern: str | None = None) -> tuple[str, list[RemoteFile]]:
    """``hf:org/name[:glob][@rev]`` or ``modelscope:org/name[:glob][@rev]`` → (canonical source, files).

    The glob picks files of the dataset repository (``*`` crosses folders); without one,
    ``default_pattern`` does, or every file.
    """
    spec = spec.strip()
    if spec.startswith("hf:"):
        kind, rest = "hf", spec[3:]
    elif spec.startswith(("modelscope:", "ms:")):
        kind, rest = "modelscope", spec.split(":", 1)[1]
    else:
        raise UserError(
            _("{spec!r} is not a dataset repository; write hf:org/name[:glob] or modelscope:org/name[:glob].").format(
                spec=spec
            )
        )
    repo, pattern, revision = parse_repo_spec(rest)
    pattern = pattern or default_pattern
    if kind == "hf":
        from huggingface_hub import HfApi
        from huggingface_hub.utils import build_hf_headers

        endpoint = hf_endpoint()
        token = os.environ.get("HF_TOKEN") or None
        api = HfApi(endpoint=endpoint, token=token)
        info = _hf_info(
            lambda: api.dataset_info(repo, revision=revision, files_metadata=True), repo, revision, endpoint
        )
        revision = info.sha or revision or "main"
        siblings = info.siblings or []
        chosen = _pick(sorted(s.rfilename for s in siblings), pattern, repo)
        files = _hf_files(
            siblings, chosen, f"{endpoint}/datasets/{repo}/resolve/{revision}", build_hf_headers(token=token)
        )
    else:
        endpoint = modelscope_endpoint()
        revision = revision or "master"
        headers = _modelscope_headers()
        entries = _modelscope_dataset_tree(endpoint, repo, revision, headers)
        chosen = _pick(sorted(entries), pattern, repo)
        files = [
            RemoteFile(
                url=f"{endpoint}/api/v1/datasets/{repo}/repo?Revision={quote(revision)}&FilePath={quote(path)}",
                path=safe_relative_path(path),
                size=entries[path].get("Size"),
                sha256=entries[path].get("Sha256") or None,
                headers=dict(headers),
            )
            for path in sorted(chosen)
        ]
    return f"{kind}:{repo}" + (f":{pattern}" if pattern else "") + f"@{revision}", files


def _pick(names: list[str], pattern: str | None, repo: str) -> set[str]:
    if not pattern:
        return {n for n in names if not n.startswith(".")}
    chosen = {n for n in names if n == pattern or fnmatch.fnmatch(n, pattern)}
    if not chosen:
        shown = ", ".join(names[:12]) + (" …" if len(names) > 12 else "")
        raise NoMatchingFile(
            _("No file in {repo} matches {pattern!r}; it has: {shown}.").format(
                repo=repo, pattern=pattern, shown=shown or _("no files")
            )
        )
    return chosen


def _modelscope_dataset_tree(endpoint: str, repo: str, revision: str, headers: dict[str, str]) -> dict[str, dict]:
    """Every file of a ModelScope dataset repository: its tree API lists one folder per call."""
    files: dict[str, dict] = {}
    folders, seen = [""], set[str]()
    while folders:
        root = folders.pop()
        if root in seen or len(seen) > 2000:
            continue
        seen.add(root)
        body = _modelscope_get(
            f"{endpoint}/api/v1/datasets/{repo}/repo/tree",
            {"Revision": revision, "Root": root, "PageSize": "10000"},
            headers,
            _("dataset {repo}").format(repo=repo),
        )
        for entry in body["Data"].get("Files") or []:
            path = entry.get("Path") or entry.get("Name")
            if entry.get("Type") == "tree":
                folders.append(path)
            elif path:
                files[path] = entry
    return files


__all__ = [
    "DownloadError",
    "Resolved",
    "resolve",
    "resolve_choice",
    "resolve_dataset",
    "resolve_hf",
    "resolve_modelscope",
    "resolve_url",
]
