"""Prometheus metrics of one app, in its own registry (two apps in a process share nothing)."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServerMetrics:
    """Counters and histograms of the server's work; :meth:`render` gives the Prometheus text."""

    def __init__(self, queue_depth: Callable[[], int], busy: Callable[[], bool]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("servr_requests", "HTTP requests answered", ["route", "status"], registry=r)
        self.prompt_tokens = Counter("servr_prompt_tokens", "Prompt tokens processed", registry=r)
        self.cached_tokens = Counter("servr_prompt_tokens_cached", "Prompt tokens reused from the KV cache", registry=r)
        self.completion_tokens = Counter("servr_completion_tokens", "Tokens generated", registry=r)
        self.cancelled = Counter("servr_generations_cancelled", "Generations stopped because the client left", registry=r)
        self.ttft = Histogram("servr_time_to_first_token_seconds", "Request arrival to first generated token",
                              buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120), registry=r)
        self.queue_wait = Histogram("servr_queue_wait_seconds", "Time waiting for the model",
                                    buckets=(0.001, 0.01, 0.1, 0.5, 1, 5, 15, 60, 300), registry=r)
        self.decode_rate = Histogram("servr_decode_tokens_per_second", "Decode speed of each generation",
                                     buckets=(1, 5, 10, 20, 40, 80, 160, 320, 640), registry=r)
        depth = Gauge("servr_queue_depth", "Requests waiting for the model", registry=r)
        depth.set_function(lambda: float(queue_depth()))
        running = Gauge("servr_generating", "1 while the model is generating", registry=r)
        running.set_function(lambda: 1.0 if busy() else 0.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
