"""Resumable, verified HTTP downloads into the store.

- Parallel ranged parts for big files when the server accepts ranges; one stream otherwise.
- The partial file is preallocated (sparse) in ``store/partial/`` with a JSON sidecar listing each
  part's range and how much of it is on disk (written after an fsync), so a download resumes
  from where it was after a cancel, a ``kill -9`` or a reboot.
- Retries with exponential back-off on dropped connections, 5xx and stalls (no byte for
  ``stall_timeout`` seconds); 401/403/404 end at once with a sentence that says what to do.
- sha256 (or the git blob sha1 the Hugging Face Hub publishes for small files) is checked before
  the file is renamed into the blob store; a mismatch discards the download.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from internlocal.errors import NetworkError, UserError
from internlocal.hub.store import Store
from internlocal.i18n import _

CHUNK = 4 << 20
MIN_PART = 32 << 20
SAVE_EVERY_S = 1.0
# a first contact that finds nobody there (connection refused, no such host) is tried this many times, not
# ``retries``: it seldom heals within seconds, and a user who typed a wrong address or is offline hears it at once
UNREACHED_TRIES = 3


class DownloadError(UserError):
    """A download that cannot succeed as asked (auth, missing file, checksum, disk)."""


class Unreachable(DownloadError, NetworkError):
    """The server could not be reached, or broke off more times than the retries allow."""


@dataclass
class RemoteFile:
    url: str
    path: str  # relative path inside the model
    size: int | None = None
    sha256: str | None = None
    git_sha1: str | None = None  # the Hub's blob id for small (non-LFS) files
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.sha256 or hashlib.sha256(self.url.encode()).hexdigest()


def _session():
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_connections=8, pool_maxsize=16, max_retries=0))
    session.mount("https://", HTTPAdapter(pool_connections=8, pool_maxsize=16, max_retries=0))
    return session


def _raise_for_status(status: int, remote: RemoteFile) -> None:
    if status in (401, 403):
        raise DownloadError(
            _(
                "Access to {url} was refused ({status}); for a gated or private Hugging Face repository accept its "
                "licence on the model page and set HF_TOKEN to a token with read access."
            ).format(url=remote.url, status=status)
        )
    if status == 404:
        raise DownloadError(
            _("{url} was not found (404); check the repository, file name and revision.").format(url=remote.url)
        )
    if status == 416:
        raise _Retry(_("range not satisfiable"))
    if status >= 500 or status == 429:
        raise _Retry(_("server answered {status}").format(status=status))
    if status >= 400:
        raise DownloadError(
            _("{url} answered {status}; the download cannot continue.").format(url=remote.url, status=status)
        )


class _Retry(Exception):
    """A transient failure: try again from the bytes already on disk."""


def _never_connected(exc: Exception) -> bool:
    """Whether ``exc`` is a connection that was never made (refused, or a host name that does not resolve), as
    opposed to one that broke or timed out."""
    import urllib3

    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    # a connect timeout raises ConnectTimeoutError, NewConnectionError's base class: not caught here
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


class _Hasher:
    """sha256 (and the git blob sha1 when the source publishes one) of a file's bytes in order.

    ``update`` hands the bytes to a thread (hashlib releases the GIL), so hashing a single stream
    overlaps with receiving it instead of adding a second pass over the file.
    """

    def __init__(self, remote: RemoteFile, size: int | None):
        import queue

        self.remote, self.size = remote, size
        self._queue: queue.Queue = queue.Queue(maxsize=16)
        self._thread: threading.Thread | None = None
        self.reset()

    def reset(self) -> None:
        self.finish()
        self.sha256 = hashlib.sha256()
        self.sha1 = hashlib.sha1() if self.remote.git_sha1 and self.size is not None else None
        if self.sha1 is not None:
            self.sha1.update(f"blob {self.size}\0".encode())
        self.length = 0

    def _consume(self) -> None:
        while (data := self._queue.get()) is not None:
            self.sha256.update(data)
            if self.sha1 is not None:
                self.sha1.update(data)

    def update(self, data) -> None:
        """``data`` must not be modified afterwards (it is hashed later, on another thread)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._consume, name="hash", daemon=True)
            self._thread.start()
        self._queue.put(data)
        self.length += len(data)

    def finish(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def feed_file(self, path: Path, length: int, check_cancelled) -> None:
        with path.open("rb") as fh:
            while self.length < length:
                chunk = fh.read(min(8 << 20, length - self.length))
                if not chunk:
                    break
                self.update(chunk)
                check_cancelled()
        self.finish()


class Downloader:
    """Downloads one file at a time into the store; cheap to create, holds one HTTP session."""

    def __init__(
        self, store: Store, *, parts: int = 4, stall_timeout: float = 30.0, retries: int = 6, backoff_s: float = 0.5
    ):
        self.store = store
        self.parts = max(1, parts)
        self.stall_timeout = stall_timeout
        self.retries = retries
        self.backoff_s = backoff_s
        self.session = _session()

    # -- public ------------------------------------------------------------------------------------

    def fetch(
        self,
        remote: RemoteFile,
        on_bytes: Callable[[int], None] = lambda n: None,
        check_cancelled: Callable[[], None] = lambda: None,
    ) -> tuple[Path, str]:
        """Download (or resume) ``remote`` and return its blob path and sha256."""
        partial = self.store.partial / f"{remote.key}.partial"
        sidecar = partial.with_suffix(".json")
        state = self._load_state(sidecar, remote)
        if state is None:
            size, ranges_ok = self._probe(remote)
            state = self._new_state(remote, size, ranges_ok)
            partial.unlink(missing_ok=True)
            with partial.open("wb") as fh:
                if size:
                    fh.truncate(size)  # sparse preallocation: parts write at their offsets
            self._save_state(sidecar, state, None)
        already = sum(p["done"] for p in state["parts"])
        if already:
            on_bytes(already)
        hasher = _Hasher(remote, state["size"])
        inline = len(state["parts"]) == 1  # one stream: hash on the way in, no second pass over the file
        try:
            if inline and already:
                hasher.feed_file(partial, already, check_cancelled)
            self._run_parts(remote, partial, sidecar, state, on_bytes, check_cancelled, hasher if inline else None)
            if not inline:
                hasher.feed_file(partial, partial.stat().st_size, check_cancelled)
        finally:
            hasher.finish()
        digest = self._verify(remote, partial, hasher)
        blob = self.store.add_blob(partial, digest, move=True)
        sidecar.unlink(missing_ok=True)
        return blob, digest

    def discard(self, remote: RemoteFile) -> None:
        partial = self.store.partial / f"{remote.key}.partial"
        partial.unlink(missing_ok=True)
        partial.with_suffix(".json").unlink(missing_ok=True)

    # -- state -------------------------------------------------------------------------------------

    def _load_state(self, sidecar: Path, remote: RemoteFile) -> dict | None:
        try:
            state = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            return None
        if state.get("url") != remote.url or (remote.size is not None and state.get("size") != remote.size):
            return None  # a different file now: start over
        if not (self.store.partial / f"{remote.key}.partial").exists():
            return None
        return state

    def _new_state(self, remote: RemoteFile, size: int | None, ranges_ok: bool) -> dict:
        bounds: list[tuple[int, int | None]] = [(0, size)]
        if size and ranges_ok and size >= 2 * MIN_PART and self.parts > 1:
            n = min(self.parts, size // MIN_PART)
            step = -(-size // n)
            bounds = [(i * step, min(size, (i + 1) * step)) for i in range(n)]
        return {
            "url": remote.url,
            "size": size,
            "ranges": ranges_ok,
            "parts": [{"start": s, "end": e, "done": 0} for s, e in bounds],
        }

    def _save_state(self, sidecar: Path, state: dict, fd: int | None) -> None:
        if fd is not None:
            os.fsync(fd)  # bytes counted as done must be on disk before the record says so
        tmp = sidecar.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, sidecar)

    # -- transfer ----------------------------------------------------------------------------------

    def _probe(self, remote: RemoteFile) -> tuple[int | None, bool]:
        import requests

        error: Exception | None = None
        for attempt in range(self.retries):
            try:
                resp = self.session.head(
                    remote.url, headers=remote.headers, allow_redirects=True, timeout=(10, self.stall_timeout)
                )
                if resp.status_code == 405:  # HEAD not allowed: ask for one byte instead
                    resp = self.session.get(
                        remote.url,
                        headers={**remote.headers, "Range": "bytes=0-0"},
                        stream=True,
                        timeout=(10, self.stall_timeout),
                    )
                    resp.close()
                    if resp.status_code == 206:
                        total = resp.headers.get("Content-Range", "").rpartition("/")[2]
                        return (int(total) if total.isdigit() else remote.size), True
                _raise_for_status(resp.status_code, remote)
                length = resp.headers.get("Content-Length")
                size = int(length) if length and length.isdigit() else remote.size
                if remote.size is not None and size is not None and size != remote.size:
                    raise DownloadError(
                        _(
                            "{url} is {size} bytes but the source lists {listed}; the remote file changed, pull again."
                        ).format(url=remote.url, size=size, listed=remote.size)
                    )
                return size, resp.headers.get("Accept-Ranges", "").lower() == "bytes"
            except (requests.ConnectionError, requests.Timeout, _Retry) as exc:
                error = exc
                if attempt + 1 >= (UNREACHED_TRIES if _never_connected(exc) else self.retries):
                    break  # no wait after the last try
                self._backoff(attempt)
        raise Unreachable(
            _("{url} could not be reached ({error}); check the connection and pull again.").format(
                url=remote.url, error=error
            )
        )

    def _run_parts(
        self, remote, partial: Path, sidecar: Path, state: dict, on_bytes, check_cancelled, hasher: _Hasher | None
    ) -> None:
        lock = threading.Lock()
        stop = threading.Event()
        last_save = [time.monotonic()]
        fd = os.open(partial, os.O_RDWR)

        def progress(n: int) -> None:
            on_bytes(n)
            with lock:
                if time.monotonic() - last_save[0] >= SAVE_EVERY_S:
                    last_save[0] = time.monotonic()
                    self._save_state(sidecar, state, fd)

        def guarded_cancel() -> None:
            if stop.is_set():
                raise _Stopped()
            check_cancelled()

        try:
            pending = [p for p in state["parts"] if p["end"] is None or p["done"] < p["end"] - p["start"]]
            if len(pending) <= 1:
                for part in pending:
                    self._run_part(remote, fd, part, state, progress, guarded_cancel, hasher)
            else:
                with ThreadPoolExecutor(max_workers=len(pending), thread_name_prefix="download") as pool:
                    futures = [
                        pool.submit(self._run_part, remote, fd, p, state, progress, guarded_cancel, None)
                        for p in pending
                    ]
                    error = None
                    for future in futures:
                        try:
                            future.result()
                        except _Stopped:
                            pass
                        except BaseException as exc:  # first real failure stops the other parts
                            stop.set()
                            error = error or exc
                    if error is not None:
                        raise error
        finally:
            with lock:
                self._save_state(sidecar, state, fd)
            os.close(fd)

    def _run_part(
        self, remote: RemoteFile, fd: int, part: dict, state: dict, progress, check_cancelled, hasher: _Hasher | None
    ) -> None:
        import requests
        import urllib3

        attempt = 0
        while True:
            start = part["start"] + part["done"]
            end = part["end"]
            if end is not None and start >= end:
                return
            headers = dict(remote.headers)
            if start > 0 or (end is not None and state["ranges"] and len(state["parts"]) > 1):
                headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
            try:
                check_cancelled()
                with self.session.get(
                    remote.url, headers=headers, stream=True, allow_redirects=True, timeout=(10, self.stall_timeout)
                ) as resp:
                    _raise_for_status(resp.status_code, remote)
                    if "Range" in headers and resp.status_code != 206:
                        if len(state["parts"]) > 1:
                            raise DownloadError(
                                _("{url} stopped honouring byte ranges; pull again.").format(url=remote.url)
                            )
                        part["done"] = 0  # the server sent the whole file again: start over
                        start = part["start"]
                        if hasher is not None:
                            hasher.reset()
                    offset = start
                    raw = resp.raw
                    decode = resp.headers.get("Content-Encoding", "identity") not in ("identity", "")
                    while True:
                        # read1: whatever has arrived (up to CHUNK). A read that waits to fill a buffer
                        # would lose what it got when a stalled connection times out.
                        data = raw.read1(CHUNK, decode_content=decode)
                        n = len(data)
                        if not n:
                            break
                        chunk = memoryview(data)
                        if end is not None and offset + n > end:
                            chunk, n = chunk[: end - offset], end - offset
                        try:
                            os.pwrite(fd, chunk, offset)
                        except OSError as exc:
                            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                                raise DownloadError(
                                    _(
                                        "The disk filled up while downloading {path}; free some space and pull "
                                        "again: the bytes already downloaded are kept and the download resumes."
                                    ).format(path=remote.path)
                                ) from None
                            raise
                        if hasher is not None:
                            hasher.update(chunk)
                        offset += n
                        part["done"] = offset - part["start"]
                        progress(n)
                        check_cancelled()
                        if end is not None and offset >= end:
                            break
                if end is None:
                    part["end"] = offset  # the size was unknown: what arrived is the file
                    return
                if offset < end:
                    raise _Retry(_("connection closed at byte {offset} of {end}").format(offset=offset, end=end))
                return
            except (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError, _Retry) as exc:
                # a retry asks for the remaining range; a server without ranges answers 200 and we start over
                attempt += 1
                if attempt >= self.retries:
                    raise Unreachable(
                        _(
                            "Downloading {path} failed after {attempt} tries ({exc}); run the pull again to resume."
                        ).format(path=remote.path, attempt=attempt, exc=exc)
                    ) from None
                self._backoff(attempt - 1)

    def _backoff(self, attempt: int) -> None:
        time.sleep(min(30.0, self.backoff_s * 2**attempt))

    # -- verification ------------------------------------------------------------------------------

    def _verify(self, remote: RemoteFile, partial: Path, hasher: _Hasher) -> str:
        size = partial.stat().st_size
        digest = hasher.sha256.hexdigest()
        bad = (
            hasher.length != size
            or (remote.sha256 and digest != remote.sha256)
            or (hasher.sha1 is not None and hasher.sha1.hexdigest() != remote.git_sha1)
            or (remote.size is not None and size != remote.size)
        )
        if bad:
            self.discard(remote)
            raise DownloadError(
                _(
                    "{path} does not match the checksum its source publishes; the download was discarded, pull again."
                ).format(path=remote.path)
            )
        return digest


class _Stopped(Exception):
    """Another part failed; this one stops quietly."""
