"""A bounded soak of the server (loopback only): many clients for a while, some disconnecting mid-stream, with
malformed and oversized requests mixed in. No slot leaks, memory stays within a stated bound, /metrics counts
what the clients sent, and every well-formed request is answered."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests

from tests.test_server import SYSTEM, served

SOAK_S = 90
OVERSIZED = b"x" * (33 << 20)  # past the server's 32 MiB body limit (images travel in bodies); made once, sent often
CLIENTS = 16
MEMORY_BOUND = 200 << 20  # growth of the serving process's RSS after warm-up, beyond the prompt cache's own
PROMPT_CACHE_MB = 64  # small enough that the soak fills it and evicts from it


def _counted(metrics: str) -> Counter:
    """internlocal_requests_total{path,status} from the Prometheus text."""
    import re

    counts: Counter = Counter()
    for path, status, value in re.findall(
        r'^internlocal_requests_total\{path="([^"]+)",status="(\d+)"\} ([0-9.e+]+)$', metrics, re.M
    ):
        counts[(path, int(status))] += int(float(value))
    return counts


@pytest.mark.chaos
@pytest.mark.timeout(900)
def test_a_soak_with_disconnects_and_bad_requests_leaks_nothing(tmp_path_factory, template_home):
    stack = contextlib.ExitStack()
    server = stack.enter_context(
        served(tmp_path_factory, template_home, slots=4, max_queue=64, prompt_cache_mb=PROMPT_CACHE_MB)
    )
    chat = f"{server.url}/v1/chat/completions"
    sent: Counter = Counter()
    unanswered: list[str] = []
    lock = threading.Lock()

    def note(path: str, status: int) -> None:
        with lock:
            sent[(path, status)] += 1

    def one(rng: random.Random) -> None:
        kind = rng.choice(["chat", "chat", "stream", "disconnect", "malformed", "oversized"])
        question = f"Count from {rng.randint(1, 50)} to {rng.randint(51, 99)}."
        body = {"model": "default", "messages": [SYSTEM, {"role": "user", "content": question}], "max_tokens": 12}
        if kind == "chat":
            r = requests.post(chat, json=body, timeout=300)
            note("/v1/chat/completions", r.status_code)
            if r.status_code != 200 or not r.json()["choices"][0]["message"]["content"]:
                unanswered.append(f"{r.status_code} {r.text[:200]}")
        elif kind == "stream":
            r = requests.post(chat, json={**body, "stream": True}, timeout=300)
            text = r.text
            note("/v1/chat/completions", r.status_code)
            if r.status_code != 200 or "[DONE]" not in text:
                unanswered.append(f"stream {r.status_code} {text[-200:]}")
        elif kind == "disconnect":
            with requests.post(chat, json={**body, "stream": True, "max_tokens": 200}, stream=True, timeout=300) as r:
                next(r.iter_lines(), None)  # the first event, then the client goes away
            note("/v1/chat/completions", 200)
        elif kind == "malformed":
            r = requests.post(chat, data=b'{"model": "default", "messages": [', timeout=60)
            note("/v1/chat/completions", r.status_code)
            assert r.status_code == 400, r.text
        else:
            r = requests.post(chat, data=OVERSIZED, headers={"content-type": "application/json"}, timeout=60)
            note("/v1/chat/completions", r.status_code)
            assert r.status_code == 413, r.text

    def client(seed: int, until: float) -> None:
        rng = random.Random(seed)
        while time.monotonic() < until:
            one(rng)

    try:
        process = psutil.Process()
        with ThreadPoolExecutor(CLIENTS) as pool:  # warm-up: every path once per client
            list(pool.map(lambda s: client(s, time.monotonic() + 5), range(CLIENTS)))
        warm_rss, warm_cache = process.memory_info().rss, server.engine.prompt_cache_used
        until = time.monotonic() + SOAK_S
        with ThreadPoolExecutor(CLIENTS) as pool:
            for future in [pool.submit(client, 100 + s, until) for s in range(CLIENTS)]:
                future.result()
        deadline = time.monotonic() + 60
        while (health := requests.get(f"{server.url}/health", timeout=10).json())["in_flight"] and (
            time.monotonic() < deadline
        ):
            time.sleep(0.2)
        assert health["in_flight"] == 0 and health["queue_depth"] == 0  # no slot leaked by the disconnects
        counted = _counted(requests.get(f"{server.url}/metrics", timeout=10).text)
        assert {k: v for k, v in counted.items() if k[0] == "/v1/chat/completions"} == dict(sent)
        assert unanswered == []
        # prompts the slots gave up are kept in host memory by design, up to their cap (and no further)
        cached = server.engine.prompt_cache_used
        assert 0 < cached <= PROMPT_CACHE_MB << 20
        growth = process.memory_info().rss - warm_rss - (cached - warm_cache)
        assert growth < MEMORY_BOUND, f"RSS grew by {growth >> 20} MiB besides the prompt cache"
        print(f"soak: {sum(sent.values())} requests, {dict(sent)}, RSS growth {growth >> 20} MiB")
    finally:
        stack.close()
