"""Prometheus metrics on a per-app registry (never the process-global one, so several apps, e.g.
in tests, never collide), plus a pure-ASGI middleware that times every request by route template."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class WorkerMetrics:
    def __init__(self, model: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r, labels = self.registry, ["route", "method", "status"]
        self.requests = Counter("worker_requests", "HTTP requests answered", labels, registry=r)
        self.latency = Histogram("worker_request_duration_seconds", "Time to the end of the response",
                                 ["route", "method"], buckets=_BUCKETS, registry=r)
        self.prompt_tokens = Counter("worker_prompt_tokens", "Prompt (input) tokens processed", registry=r)
        self.completion_tokens = Counter("worker_completion_tokens", "Completion tokens generated", registry=r)
        self.queue_depth = Gauge("worker_queue_depth", "Requests waiting for an engine slot", registry=r)
        self.in_flight = Gauge("worker_requests_in_flight", "Requests holding an engine slot", registry=r)
        self.model_loaded = Gauge("worker_model_loaded", "1 when the model is loaded and ready",
                                  ["model"], registry=r)
        self.model_loaded.labels(model=model).set(0)
        self.model = model

    def set_loaded(self, loaded: bool) -> None:
        self.model_loaded.labels(model=self.model).set(1 if loaded else 0)

    def watch_admission(self, running: Callable[[], int], waiting: Callable[[], int]) -> None:
        """Gauges read the admission counters at scrape time, so they can never drift."""
        self.in_flight.set_function(lambda: float(running()))
        self.queue_depth.set_function(lambda: float(waiting()))


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: WorkerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(route=name, method=method, status=str(status)).inc()
            self.metrics.latency.labels(route=name, method=method).observe(time.perf_counter() - start)
