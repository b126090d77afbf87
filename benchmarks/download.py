"""Download throughput: internlocal's downloader vs curl, same 1 GiB file from nginx on 127.0.0.1.

nginx (Debian package: apt-get install nginx-light) serves a file of random bytes; each client
writes it to the same disk. internlocal's time includes the sha256 check and the rename into the
store (curl does neither); its transfer-only rate is reported too. Resume overhead: a download
is stopped at half way and resumed, and the two halves together are compared with one straight
download.

    python benchmarks/download.py [--size-mib 1024] [--reps 3]

Target (issue 3): single-stream ratio internlocal/curl >= 0.9.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from internlocal.hub.download import Downloader, RemoteFile
from internlocal.hub.store import Store

NGINX_CONF = """
daemon off;
worker_processes 1;
error_log {root}/error.log;
pid {root}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    types {{ application/octet-stream gguf; }}
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
    }}
}}
"""


class Halt(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_curl(url: str, out: Path) -> tuple[float, float]:
    start = time.perf_counter()
    result = subprocess.run(
        ["curl", "-sf", "-o", str(out), "-w", "%{speed_download}", url], capture_output=True, text=True, check=True
    )
    elapsed = time.perf_counter() - start
    out.unlink()
    return elapsed, float(result.stdout)


def time_curl_verified(url: str, out: Path, sha: str) -> float:
    """What a careful user does by hand: download with curl, then check the published sha256."""
    start = time.perf_counter()
    subprocess.run(["curl", "-sf", "-o", str(out), url], check=True)
    got = subprocess.run(["sha256sum", str(out)], capture_output=True, text=True, check=True).stdout.split()[0]
    elapsed = time.perf_counter() - start
    assert got == sha
    out.unlink()
    return elapsed


def time_ours(url: str, size: int, sha: str, work: Path, parts: int) -> tuple[float, float]:
    store = Store(work / "store")
    stamps: list[float] = []
    start = time.perf_counter()
    Downloader(store, parts=parts).fetch(
        RemoteFile(url=url, path="big.gguf", size=size, sha256=sha),
        on_bytes=lambda n: stamps.append(time.perf_counter()),
    )
    elapsed = time.perf_counter() - start
    transfer = stamps[-1] - start
    shutil.rmtree(work / "store")
    return elapsed, size / transfer


def time_resume(url: str, size: int, sha: str, work: Path) -> float:
    """Seconds for a download stopped at half way plus its resumption."""
    store = Store(work / "store")
    remote = RemoteFile(url=url, path="big.gguf", size=size, sha256=sha)
    got = [0]

    def on_bytes(n: int) -> None:
        got[0] += n

    def stop_half() -> None:
        if got[0] >= size // 2:
            raise Halt()

    start = time.perf_counter()
    with contextlib.suppress(Halt):
        Downloader(store, parts=1).fetch(remote, on_bytes, stop_half)
    Downloader(store, parts=1).fetch(remote)
    elapsed = time.perf_counter() - start
    shutil.rmtree(work / "store")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        raise SystemExit("nginx is needed: apt-get install nginx-light")
    root = Path(tempfile.mkdtemp(prefix="il-dl-", dir=os.environ.get("TMPDIR")))
    root.chmod(0o755)  # nginx's worker runs as an unprivileged user
    (root / "www").mkdir()
    (root / "tmp").mkdir()
    big = root / "www" / "big.gguf"
    size = args.size_mib << 20
    import hashlib

    digest = hashlib.sha256()
    with big.open("wb") as fh:
        for _ in range(args.size_mib):
            chunk = os.urandom(1 << 20)
            digest.update(chunk)
            fh.write(chunk)
    sha = digest.hexdigest()
    port = free_port()
    (root / "nginx.conf").write_text(NGINX_CONF.format(root=root, port=port))
    nginx = subprocess.Popen(
        [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(root / "nginx.conf"), "-p", str(root)]
    )
    url = f"http://127.0.0.1:{port}/big.gguf"
    try:
        for _ in range(50):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        work = root / "work"
        work.mkdir()
        time_curl(url, work / "warm")  # page cache warm for everyone
        curl, curl_verified, ours1, ours4, resumed, straight = [], [], [], [], [], []
        for _ in range(args.reps):
            curl.append(time_curl(url, work / "curl.out"))
            curl_verified.append(time_curl_verified(url, work / "curl.out", sha))
            ours1.append(time_ours(url, size, sha, work, parts=1))
            ours4.append(time_ours(url, size, sha, work, parts=4))
            straight.append(time_ours(url, size, sha, work, parts=1)[0])
            resumed.append(time_resume(url, size, sha, work))
        med = statistics.median
        mib = size / 2**20
        c_t = med(t for t, _ in curl)
        print(f"{mib:.0f} MiB from nginx on 127.0.0.1, {args.reps} reps, median; writes to {work}")
        print(f"{'client':36}{'seconds':>9}{'MiB/s':>9}  transfer-only MiB/s")
        print(
            f"{'curl -o FILE':36}{c_t:>9.2f}{mib / c_t:>9.0f}  "
            f"{med(s for _, s in curl) / 2**20:.0f} (curl's own figure)"
        )
        cv = med(curl_verified)
        print(f"{'curl -o FILE && sha256sum FILE':36}{cv:>9.2f}{mib / cv:>9.0f}")
        for label, runs in (
            ("internlocal, 1 stream (+sha256)", ours1),
            ("internlocal, 4 ranged parts (+sha256)", ours4),
        ):
            t = med(r[0] for r in runs)
            print(f"{label:36}{t:>9.2f}{mib / t:>9.0f}  {med(r[1] for r in runs) / 2**20:.0f}")
        ratio = c_t / med(r[0] for r in ours1)
        print(f"ratio internlocal/curl, single stream, end to end: {ratio:.2f} (target >= 0.9)")
        print(f"ratio internlocal/(curl + sha256sum), single stream: {cv / med(r[0] for r in ours1):.2f}")
        overhead = med(resumed) - med(straight)
        print(
            f"resume overhead (stopped at 50%, resumed): {overhead:+.2f} s on {med(straight):.2f} s "
            f"({overhead / med(straight) * 100:+.0f}%)"
        )
    finally:
        nginx.terminate()
        nginx.wait(10)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
