"""A real HTTP server on 127.0.0.1 for hub tests: plain files, a Hugging Face Hub and a ModelScope look-alike.

It serves files the tests made, with HEAD, byte ranges and fault injection:

- ``/files/<name>``                               a plain file
- ``/api/models/<org>/<repo>/revision/<rev>``     Hub model info with ``siblings`` (sha256 for LFS files)
- ``/<org>/<repo>/resolve/<rev>/<path>``          Hub downloads
- ``/api/v1/models/<org>/<repo>/repo/files``      ModelScope file list
- ``/api/v1/models/<org>/<repo>/repo?FilePath=``  ModelScope downloads
- ``/api/datasets/…``, ``/datasets/<org>/<repo>/resolve/…``, ``/api/v1/datasets/<org>/<repo>/repo/tree?Root=``
  and ``/api/v1/datasets/<org>/<repo>/repo?FilePath=``: the same for dataset repositories

Faults (set on ``server.faults``): ``drop_after`` bytes (close the connection mid-body, once per
path unless ``drop_always``), ``status`` per path, ``no_ranges``, ``wrong_sha256`` per path,
``delay_s`` per chunk, ``stall_after`` bytes (stop sending without closing).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

LFS_SUFFIXES = (".gguf", ".safetensors", ".bin")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


class HubServer:
    def __init__(self, root: Path):
        self.root = Path(root)  # files/<name>, repos/<org>/<repo>/<path>
        (self.root / "files").mkdir(parents=True, exist_ok=True)
        (self.root / "repos").mkdir(parents=True, exist_ok=True)
        (self.root / "datasets").mkdir(parents=True, exist_ok=True)
        self.faults: dict = {}
        self.bytes_sent: dict[str, int] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self._dropped: set[str] = set()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                server._handle(self, head=True)

            def do_GET(self):
                server._handle(self, head=False)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- content -----------------------------------------------------------------------------------

    def add_file(self, name: str, data: bytes) -> str:
        path = self.root / "files" / name
        path.write_bytes(data)
        return f"{self.url}/files/{name}"

    def add_dataset_file(self, repo: str, rel: str, data: bytes) -> None:
        self.add_repo_file(repo, rel, data, kind="datasets")

    def add_repo_file(self, repo: str, rel: str, data: bytes | Path, kind: str = "repos") -> None:
        path = self.root / kind / repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, Path):
            path.symlink_to(data)
        else:
            path.write_bytes(data)

    def _repo_files(self, repo: str, kind: str = "repos") -> list[Path]:
        base = self.root / kind / repo
        return sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else []

    # -- request handling --------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        url = urlparse(h.path)
        path = unquote(url.path)
        query = parse_qs(url.query)
        with self._lock:
            self.requests.append((h.command, h.path, h.headers.get("Range")))
        status = self.faults.get("status", {}).get(path)
        if status:
            return self._send_json(h, {"error": "fault"}, status, head)
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
            return self._hf_info(h, m.group(1), m.group(2) or "main", head)
        if m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
            return self._hf_info(h, m.group(1), m.group(2) or "main", head, kind="datasets")
        if m := re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            return self._serve(h, self.root / "datasets" / m.group(1) / m.group(3), path, head)
        if m := re.fullmatch(r"/api/v1/datasets/([^/]+/[^/]+)/repo/tree", path):
            return self._ms_tree(h, m.group(1), query.get("Root", [""])[0], head)
        if m := re.fullmatch(r"/api/v1/datasets/([^/]+/[^/]+)/repo", path):
            rel = query.get("FilePath", [""])[0]
            return self._serve(h, self.root / "datasets" / m.group(1) / rel, h.path, head)
        if m := re.fullmatch(r"/api/v1/models/([^/]+/[^/]+)/repo/files", path):
            return self._ms_files(h, m.group(1), head)
        if m := re.fullmatch(r"/api/v1/models/([^/]+/[^/]+)/repo", path):
            rel = query.get("FilePath", [""])[0]
            return self._serve(h, self.root / "repos" / m.group(1) / rel, h.path, head)
        if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            return self._serve(h, self.root / "repos" / m.group(1) / m.group(3), path, head)
        if path.startswith("/files/"):
            return self._serve(h, self.root / "files" / path[len("/files/") :], path, head)
        self._send_json(h, {"error": "not found"}, 404, head)

    def _send_json(self, h, body, status: int, head: bool) -> None:
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if not head:
            h.wfile.write(data)

    def _sibling(self, repo: str, file: Path, kind: str = "repos") -> dict:
        rel = file.relative_to(self.root / kind / repo).as_posix()
        data = file.read_bytes()
        entry = {"rfilename": rel, "size": len(data), "blobId": git_blob_sha1(data)}
        if rel.endswith(LFS_SUFFIXES):
            sha = hashlib.sha256(data).hexdigest()
            if rel in self.faults.get("wrong_sha256", set()):
                sha = "0" * 64
            entry["lfs"] = {"sha256": sha, "size": len(data), "pointerSize": 134}
        if rel in self.faults.get("claimed_size", {}):
            entry["size"] = self.faults["claimed_size"][rel]
            if "lfs" in entry:
                entry["lfs"]["size"] = entry["size"]
        return entry

    def _hf_info(self, h, repo: str, revision: str, head: bool, kind: str = "repos") -> None:
        files = self._repo_files(repo, kind)
        if not files:
            return self._send_json(h, {"error": "Repository not found"}, 404, head)
        body = {
            "id": repo,
            "modelId": repo,
            "sha": "0123456789abcdef0123456789abcdef01234567",
            "private": False,
            "siblings": [self._sibling(repo, f, kind) for f in files] + self.faults.get("extra_siblings", []),
        }
        self._send_json(h, body, 200, head)

    def _ms_tree(self, h, repo: str, root: str, head: bool) -> None:
        """ModelScope's dataset tree: one folder per call, sub-folders as ``tree`` entries."""
        base = self.root / "datasets" / repo
        folder = base / root.strip("/")
        if not base.is_dir() or not folder.is_dir():
            return self._send_json(h, {"Code": 10010205001, "Message": "dataset not found", "Data": None}, 404, head)
        entries = []
        for f in sorted(folder.iterdir()):
            rel = f.relative_to(base).as_posix()
            if f.is_dir():
                entries.append({"Name": f.name, "Path": rel, "Type": "tree", "Size": 0})
            else:
                data = f.read_bytes()
                entries.append(
                    {
                        "Name": f.name,
                        "Path": rel,
                        "Type": "blob",
                        "Size": len(data),
                        "Sha256": hashlib.sha256(data).hexdigest(),
                    }
                )
        self._send_json(h, {"Code": 200, "Data": {"Files": entries}, "Success": True}, 200, head)

    def _ms_files(self, h, repo: str, head: bool) -> None:
        files = self._repo_files(repo)
        if not files:
            return self._send_json(h, {"Code": 10010205001, "Message": "model not found", "Data": None}, 404, head)
        entries = []
        for f in files:
            sib = self._sibling(repo, f)
            entries.append(
                {
                    "Name": f.name,
                    "Path": sib["rfilename"],
                    "Type": "blob",
                    "Size": sib["size"],
                    "Sha256": sib.get("lfs", {}).get("sha256", hashlib.sha256(f.read_bytes()).hexdigest()),
                }
            )
        self._send_json(h, {"Code": 200, "Data": {"Files": entries}, "Success": True}, 200, head)

    def _serve(self, h, file: Path, key: str, head: bool) -> None:
        if not file.is_file():
            return self._send_json(h, {"error": "Entry not found"}, 404, head)
        size = file.stat().st_size
        start, end = 0, size - 1
        rng = h.headers.get("Range")
        partial = False
        if rng and not self.faults.get("no_ranges"):
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if m:
                start = int(m.group(1))
                end = int(m.group(2)) if m.group(2) else size - 1
                if start >= size:
                    h.send_response(416)
                    h.send_header("Content-Range", f"bytes */{size}")
                    h.send_header("Content-Length", "0")
                    h.end_headers()
                    return
                partial = True
        h.send_response(206 if partial else 200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(end - start + 1))
        if not self.faults.get("no_ranges"):
            h.send_header("Accept-Ranges", "bytes")
        if partial:
            h.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        h.end_headers()
        if head:
            return
        drop_after = self.faults.get("drop_after")
        stall_after = self.faults.get("stall_after")
        delay = self.faults.get("delay_s", 0)
        sent = 0
        with file.open("rb") as fh:
            fh.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                chunk = fh.read(min(64 << 10, remaining))
                if (
                    drop_after is not None
                    and sent + len(chunk) > drop_after
                    and (self.faults.get("drop_always") or key not in self._dropped)
                ):
                    chunk = chunk[: max(0, drop_after - sent)]
                    h.wfile.write(chunk)
                    self._count(key, len(chunk))
                    self._dropped.add(key)
                    h.close_connection = True
                    h.wfile.flush()
                    h.connection.shutdown(2)
                    return
                if stall_after is not None and sent >= stall_after:
                    time.sleep(self.faults.get("stall_s", 5))
                    h.close_connection = True
                    return
                try:
                    h.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    return
                self._count(key, len(chunk))
                sent += len(chunk)
                remaining -= len(chunk)
                if delay:
                    time.sleep(delay)

    def _count(self, key: str, n: int) -> None:
        with self._lock:
            self.bytes_sent[key] = self.bytes_sent.get(key, 0) + n

    def total_sent(self) -> int:
        with self._lock:
            return sum(self.bytes_sent.values())
