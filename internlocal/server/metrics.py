"""Prometheus metrics of the server (prometheus-client, one registry per server)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

_SCHEDULER_HELP = {
    "steps": "Decode steps of the batching scheduler",
    "batch_tokens": "Tokens decoded by the scheduler (prompt chunks included)",
    "step_seconds": "Time in scheduler steps (admission, batch, decode, sampling, delivery)",
    "decode_seconds": "Time inside llama_decode",
    "sample_seconds": "Time choosing next tokens and handing text to the requests",
}


class _SchedulerCollector(Collector):
    """The batching engine's own step counters, read when /metrics is scraped (nothing to keep in sync)."""

    def __init__(self, read: Callable[[], Any]):
        self.read = read

    def collect(self):
        stats = self.read()
        if stats is None:
            return
        for name, value in asdict(stats).items():
            yield CounterMetricFamily(f"internlocal_scheduler_{name}", _SCHEDULER_HELP[name], value=value)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("internlocal_requests", "HTTP requests", ["path", "status"], registry=r)
        self.latency = Histogram(
            "internlocal_request_seconds", "Request duration (to the last byte for streams)", ["path"], registry=r
        )
        self.prompt_tokens = Counter("internlocal_prompt_tokens", "Prompt tokens processed", registry=r)
        self.completion_tokens = Counter("internlocal_completion_tokens", "Tokens generated", registry=r)
        self.ttft = Histogram(
            "internlocal_time_to_first_token_seconds",
            "Time to first token",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=r,
        )
        self.tokens_per_s = Gauge(
            "internlocal_decode_tokens_per_second", "Decode speed of the last finished request", registry=r
        )
        self.queue_depth = Gauge("internlocal_queue_depth", "Requests waiting for a slot", registry=r)
        self.in_flight = Gauge("internlocal_requests_in_flight", "Requests admitted and not finished", registry=r)
        self.disconnects = Counter(
            "internlocal_client_disconnects", "Generations cancelled because the client left", registry=r
        )
        # plain copies for the TUI's Serve screen (GET /internlocal/log)
        self.recent: deque[dict] = deque(maxlen=200)
        self.totals: dict[str, Any] = {
            "requests": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "last_tokens_per_s": None,
        }

    def watch_scheduler(self, read: Callable[[], Any]) -> None:
        """Export a batching engine's ``SchedulerStats`` (``read`` returns them, or None for other engines)."""
        self.registry.register(_SchedulerCollector(read))

    def request(
        self, path: str, status: int, seconds: float | None = None, method: str = "", request_id: str | None = None
    ) -> None:
        if path.startswith("/v1/"):
            self.totals["requests"] += 1
            self.recent.append(
                {
                    "t": time.time(),
                    "id": request_id,
                    "method": method,
                    "path": path,
                    "status": status,
                    "ms": round(seconds * 1000, 1) if seconds is not None else None,
                }
            )
        if not path.startswith("/v1/"):
            path = "other" if path not in ("/health", "/metrics") else path
        self.requests.labels(path=path, status=str(status)).inc()
        if seconds is not None:
            self.latency.labels(path=path).observe(seconds)

    def generation(self, prompt: int, completion: int, ttft_s: float | None, tokens_per_s: float | None) -> None:
        self.prompt_tokens.inc(prompt)
        self.completion_tokens.inc(completion)
        self.totals["prompt_tokens"] += prompt
        self.totals["completion_tokens"] += completion
        if tokens_per_s:
            self.totals["last_tokens_per_s"] = round(tokens_per_s, 1)
        if ttft_s is not None:
            self.ttft.observe(ttft_s)
        if tokens_per_s:
            self.tokens_per_s.set(tokens_per_s)

    def render(self) -> str:
        return generate_latest(self.registry).decode()
