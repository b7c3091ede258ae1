"""A worker's Prometheus metrics, on a per-app registry (never the process-global one, so several apps,
e.g. in tests, never collide). Names and labels follow the platform's convention (docs/MONITORING.md):
``worker_`` prefix, base units, ``_total`` counters, and ``model`` / ``endpoint`` / ``status`` / ``gpu``.

A worker serves one model, so every ``model`` label holds the configured model name and nothing a
client sends. Requests are counted by the middleware for the OpenAI routes (``/v1/...``) and for
requests no route matched; the operator routes (``/health``, ``/gpu-stats``, ``/metrics``) are polled
every few seconds and would drown the traffic, so they are not counted.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from common.metrics import BATCH_BUCKETS, TTFT_BUCKETS, UNMATCHED, GPUCollector, RequestMetrics

T = TypeVar("T")


def is_traffic(endpoint: str) -> bool:
    """The OpenAI routes and paths no route serves; not the operator routes, polled all the time."""
    return endpoint.startswith("/v1/") or endpoint == UNMATCHED


class WorkerMetrics:
    def __init__(self, model: str) -> None:
        self.model = model
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = RequestMetrics("worker", r, model=model, counted=is_traffic)
        self.ttft = Histogram("worker_time_to_first_token_seconds",
                              "Streamed chat/text completions: time from request to the first generated text.",
                              ["model"], buckets=TTFT_BUCKETS, registry=r).labels(model)
        # Bound to this worker's model: call sites only say how many.
        self.prompt_tokens = Counter("worker_prompt_tokens_total", "Prompt (input) tokens processed.",
                                     ["model"], registry=r).labels(model)
        self.completion_tokens = Counter("worker_completion_tokens_total", "Completion tokens generated.",
                                         ["model"], registry=r).labels(model)
        self.queue_depth = Gauge("worker_queue_depth", "Requests waiting for an engine slot.", ["model"],
                                 registry=r).labels(model)
        self.in_flight = Gauge("worker_in_flight_requests", "Requests holding an engine slot.", ["model"],
                               registry=r).labels(model)
        self.model_loaded = Gauge("worker_model_loaded", "1 when the model is loaded and ready, else 0.",
                                  ["model"], registry=r).labels(model)
        self.batch_size = Histogram("worker_batch_size",
                                    "Rows per engine step: sequences per llm decode step, inputs per "
                                    "embedding encode.", ["model"], buckets=BATCH_BUCKETS, registry=r).labels(model)
        self.model_loaded.set(0)
        # worker_gpu_*{gpu}: read through NVML at scrape time, absent on a host without a GPU.
        self.gpu = GPUCollector("worker")
        r.register(self.gpu)

    def set_loaded(self, loaded: bool) -> None:
        self.model_loaded.set(1 if loaded else 0)

    def watch_admission(self, running: Callable[[], int], waiting: Callable[[], int]) -> None:
        """Gauges read the admission counters at scrape time, so they can never drift."""
        self.in_flight.set_function(lambda: float(running()))
        self.queue_depth.set_function(lambda: float(waiting()))

    async def first_token(self, events: AsyncIterator[T], started: float) -> AsyncIterator[T]:
        """``events`` unchanged; the first one (the first generated text of any choice) is timed from
        ``started``. Closing this iterator closes ``events``."""
        async with aclosing(events):  # type: ignore[type-var]
            first = True
            async for event in events:
                if first:
                    first = False
                    self.ttft.observe(time.perf_counter() - started)
                yield event
