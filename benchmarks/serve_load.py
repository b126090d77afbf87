"""Serving under load: `internlocal serve` vs `python -m llama_cpp.server`, same model, same run.

Both servers run the embedded SmolLM2-135M (or --model) with the same threads and context per
request. For each concurrency level, that many clients send streaming chat completions
(different prompts, seeded sampling, a fixed number of tokens) until --requests have finished.
Reported: requests/s, aggregate output tokens/s, time to first token and inter-token latency
p50/p95. llama_cpp.server needs its extras: pip install sse-starlette starlette-context.

    python benchmarks/serve_load.py [--levels 1,4,8,16] [--requests 16] [--max-tokens 64]

Targets (issue 4): at concurrency 1 within 5 % of llama_cpp.server; at 8, >= 1.5x its output tokens/s.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from itertools import pairwise
from pathlib import Path

import requests

from internlocal.engines.llamacpp import default_threads
from internlocal.hub.embedded import CHAT_MODEL

TOPICS = [
    "a lighthouse",
    "a dragon",
    "a robot",
    "the sea",
    "a city at night",
    "a garden",
    "a train",
    "a mountain",
    "a library",
    "winter",
    "a market",
    "a storm",
    "a violin",
    "the moon",
    "a bakery",
    "a river",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server at {url} exited with {proc.returncode}; see its log in INTERNLOCAL_HOME")
        try:
            if requests.get(f"{url}/v1/models", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def one_request(url: str, i: int, max_tokens: int) -> dict:
    body = {
        "model": "default",
        "stream": True,
        "max_tokens": max_tokens,
        "temperature": 0.8,
        "seed": i,
        "messages": [{"role": "user", "content": f"Write a long poem about {TOPICS[i % len(TOPICS)]}."}],
    }
    start = time.perf_counter()
    stamps = []
    with requests.post(f"{url}/v1/chat/completions", json=body, stream=True, timeout=600) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines(decode_unicode=True):
            if not line or not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
                stamps.append(time.perf_counter())
    end = time.perf_counter()
    return {
        "ttft": stamps[0] - start if stamps else None,
        "tokens": len(stamps),
        "itl": [b - a for a, b in pairwise(stamps)],
        "seconds": end - start,
    }


def load(url: str, concurrency: int, total: int, max_tokens: int) -> dict:
    results: list[dict] = []
    lock = threading.Lock()
    counter = iter(range(total))

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            try:
                r = one_request(url, i, max_tokens)
            except requests.RequestException as exc:
                r = {"error": str(exc), "ttft": None, "tokens": 0, "itl": [], "seconds": 0}
            with lock:
                results.append(r)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    ttfts = sorted(r["ttft"] for r in results if r["ttft"] is not None)
    itls = sorted(x for r in results for x in r["itl"])

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")

    tokens = sum(r["tokens"] for r in results)
    ok = [r for r in results if "error" not in r]
    return {
        "errors": len(results) - len(ok),
        "req_s": len(ok) / elapsed,
        "tok_s": tokens / elapsed,
        "ttft_p50": pct(ttfts, 0.5),
        "ttft_p95": pct(ttfts, 0.95),
        "itl_p50": pct(itls, 0.5),
        "itl_p95": pct(itls, 0.95),
        "tokens": tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", default="1,4,8,16")
    parser.add_argument("--requests", type=int, default=16, help="requests per level (at least the concurrency)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--ctx", type=int, default=1024)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    model = str(args.model or CHAT_MODEL.locate())
    threads = default_threads()
    home = tempfile.mkdtemp(prefix="il-serve-")
    env = dict(os.environ, INTERNLOCAL_HOME=home, INTERNLOCAL_THREADS=str(threads))

    ours_port, theirs_port = free_port(), free_port()
    exe = Path(sys.executable).with_name("internlocal")
    logs = Path(home)  # servers log to files: an undrained pipe would stall them
    ours = subprocess.Popen(
        [str(exe), "serve", "--port", str(ours_port), "--slots", str(max(levels)), "--ctx", str(args.ctx)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(logs / "internlocal.log").open("w"),
        text=True,
    )
    theirs = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            model,
            "--port",
            str(theirs_port),
            "--n_ctx",
            str(args.ctx),
            "--n_threads",
            str(threads),
            "--n_threads_batch",
            str(threads),
            "--verbose",
            "False",
            # by default a new request interrupts the one streaming; queue them instead
            "--interrupt_requests",
            "False",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(logs / "llama_cpp_server.log").open("w"),
        text=True,
    )
    results: dict[str, dict[int, dict]] = {"internlocal": {}, "llama_cpp.server": {}}
    try:
        urls = {"internlocal": f"http://127.0.0.1:{ours_port}", "llama_cpp.server": f"http://127.0.0.1:{theirs_port}"}
        wait_ready(urls["internlocal"], ours)
        wait_ready(urls["llama_cpp.server"], theirs)
        for url in urls.values():
            load(url, 1, 2, 8)  # warm-up
        for level in levels:
            total = max(args.requests, level)
            for name, url in urls.items():  # each server gets the machine to itself for its turn
                results[name][level] = load(url, level, total, args.max_tokens)
    finally:
        for proc in (ours, theirs):
            proc.terminate()
            proc.wait(30)

    print(
        f"model {Path(model).name}, {threads} threads, ctx {args.ctx}, {args.max_tokens} tokens per request, "
        f"requests per level max({args.requests}, concurrency)"
    )
    print(
        f"{'server':18}{'conc':>5}{'req/s':>8}{'out tok/s':>11}{'TTFT p50':>10}{'p95':>8}{'ITL p50':>9}{'p95':>8}"
        f"{'errors':>8}  (ms)"
    )
    for level in levels:
        for name in results:
            r = results[name][level]
            print(
                f"{name:18}{level:>5}{r['req_s']:>8.2f}{r['tok_s']:>11.1f}{r['ttft_p50']:>10.0f}{r['ttft_p95']:>8.0f}"
                f"{r['itl_p50']:>9.1f}{r['itl_p95']:>8.1f}{r['errors']:>8}"
            )
    for level in levels:
        ratio = results["internlocal"][level]["tok_s"] / results["llama_cpp.server"][level]["tok_s"]
        print(f"concurrency {level}: output tokens/s internlocal / llama_cpp.server = {ratio:.2f}")


if __name__ == "__main__":
    main()
