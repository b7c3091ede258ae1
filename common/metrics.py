"""Prometheus pieces every service shares: histogram buckets, the per-request middleware and the request
counter and histogram it feeds, GPU gauges.

Naming follows one convention on every service (docs/MONITORING.md): a per-service prefix
(``gateway_``, ``worker_``, ``service_registry_``, ``model_registry_``), base units in the name
(``_seconds``, ``_bytes``, ``_ratio``, ``_celsius``), ``_total`` on counters, and the same label names
everywhere: ``model``, ``endpoint`` (a route template such as ``/v1/chat/completions``), ``status`` (the
HTTP code as a string), ``replica`` (a base URL), ``gpu`` (an NVML index) and ``state``.

Every service keeps its own :class:`CollectorRegistry` (several apps share one test process), and values
that are state rather than events (GPU readings, queue lengths, snapshot counts) are read when Prometheus
scrapes, never copied into gauges that could drift.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.gpu import collect_gpu_stats
from common.records import GPUInfo, GPUStats

# Request latency up to a long generation; time to first token; a registry probe; rows in a batch.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
PROBE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

# The endpoint label of a request no route matched (never the raw path: clients must not add series).
UNMATCHED = "unmatched"
# Routes health checks and Prometheus call every few seconds: counted, they would drown the traffic.
POLLED = frozenset({"/health", "/metrics"})
# Where the middleware leaves the request's start (``perf_counter``) for handlers: ``request.state``.
STARTED_KEY = "metrics_started"

MiB = 2**20

# name suffix, help, and the reading in base units (None: not read).
_GPU_GAUGES: tuple[tuple[str, str, Callable[[GPUInfo], float | None]], ...] = (
    ("gpu_utilization_ratio", "GPU busy fraction over NVML's last sample period (0-1).",
     lambda g: None if g.utilization_percent is None else g.utilization_percent / 100),
    ("gpu_memory_used_bytes", "GPU memory in use.",
     lambda g: None if g.memory_used_mb is None else g.memory_used_mb * MiB),
    ("gpu_memory_total_bytes", "GPU memory in all.",
     lambda g: None if g.memory_total_mb is None else g.memory_total_mb * MiB),
    ("gpu_temperature_celsius", "GPU core temperature.", lambda g: g.temperature_c),
)


def gpu_families(prefix: str, labels: Sequence[str],
                 readings: Iterable[tuple[Sequence[str], GPUInfo]]) -> list[GaugeMetricFamily]:
    """The four GPU gauges as ``{prefix}_gpu_*`` families; ``readings`` pairs label values with a GPU.

    A reading NVML could not take is left out rather than reported as 0."""
    families = [GaugeMetricFamily(f"{prefix}_{suffix}", text, labels=list(labels))
                for suffix, text, _ in _GPU_GAUGES]
    for values, gpu in readings:
        for family, (_, _, read) in zip(families, _GPU_GAUGES, strict=True):
            value = read(gpu)
            if value is not None:
                family.add_metric(list(values), value)
    return families


class GPUCollector(Collector):
    """``{prefix}_gpu_*{gpu}`` read through NVML at scrape time; on a host without a GPU (or without
    NVML) the families are simply absent. NVML calls block: scrape in a thread (``asyncio.to_thread``)."""

    def __init__(self, prefix: str, read: Callable[[], GPUStats] = collect_gpu_stats) -> None:
        self.prefix = prefix
        self._read = read

    def describe(self) -> Iterator[Metric]:
        # Names only, so registering never touches NVML; the registry still refuses duplicates.
        return iter(gpu_families(self.prefix, ["gpu"], []))

    def collect(self) -> Iterator[Metric]:
        stats = self._read()
        if not stats.available or not stats.gpus:
            return iter(())
        readings = [((str(g.index),), g) for g in stats.gpus]
        return iter([f for f in gpu_families(self.prefix, ["gpu"], readings) if f.samples])


ObserveRequest = Callable[[str, int, float], None]


class RequestMetricsMiddleware:
    """Pure ASGI: after every HTTP request, ``observe(endpoint, status, seconds)``.

    ``endpoint`` is the matched route's template (``/models/{model_id:path}``); an answer given before
    routing (a 413 from the body limit) gets the path when it is one of the app's parameterless
    routes, and anything else ``"unmatched"``. The time runs to the last byte of the body, so a stream
    counts in full. ``status`` is 500 when the app raised before starting a response. The request's
    start is left in ``request.state`` for handlers that time from it (time to first token)."""

    def __init__(self, app: ASGIApp, observe: ObserveRequest) -> None:
        self.app = app
        self.observe = observe
        self._plain_paths: frozenset[str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        scope.setdefault("state", {})[STARTED_KEY] = start
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.observe(self._endpoint(scope), status, time.perf_counter() - start)

    def _endpoint(self, scope: Scope) -> str:
        path = getattr(scope.get("route"), "path", None)
        if path:
            return path
        if self._plain_paths is None:
            self._plain_paths = _plain_paths(scope.get("app"))
        return scope["path"] if scope["path"] in self._plain_paths else UNMATCHED


class RequestMetrics:
    """``{prefix}_requests_total{endpoint,status}`` and ``{prefix}_request_duration_seconds{endpoint}``,
    fed by :class:`RequestMetricsMiddleware` (``observe_request=metrics.requests.observe``).

    ``counted(endpoint)`` says which endpoints are traffic (default: all but :data:`POLLED`). ``model``:
    a worker's one model, put first on every series as the ``model`` label."""

    def __init__(self, prefix: str, registry: CollectorRegistry, *, model: str | None = None,
                 counted: Callable[[str], bool] = lambda endpoint: endpoint not in POLLED) -> None:
        self._model: tuple[str, ...] = () if model is None else (model,)
        self._counted = counted
        labels = ["model", "endpoint"] if model is not None else ["endpoint"]
        by = ("model, endpoint", "model and endpoint") if model is not None else ("endpoint", "endpoint")
        self.requests = Counter(f"{prefix}_requests_total", f"Requests answered, by {by[0]} and status.",
                                [*labels, "status"], registry=registry)
        self.latency = Histogram(f"{prefix}_request_duration_seconds",
                                 f"Time from request to the last byte of the answer, by {by[1]}.",
                                 labels, buckets=LATENCY_BUCKETS, registry=registry)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        if self._counted(endpoint):
            self.requests.labels(*self._model, endpoint, str(status)).inc()
            self.latency.labels(*self._model, endpoint).observe(seconds)


def _plain_paths(app: object) -> frozenset[str]:
    """The app's route templates without parameters, from its OpenAPI schema (built once, cached)."""
    try:
        paths = app.openapi()["paths"]  # type: ignore[attr-defined]
    except Exception:  # not a FastAPI app, or a schema that cannot be built: no fallback
        return frozenset()
    return frozenset(p for p in paths if "{" not in p)


def started_at(state: object) -> float:
    """The request's start as the middleware saw it (``request.state``), else now."""
    value = getattr(state, STARTED_KEY, None)
    return value if isinstance(value, float) else time.perf_counter()
