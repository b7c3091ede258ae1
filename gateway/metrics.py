"""Prometheus metrics of one gateway app, in its own registry.

A per-app :class:`CollectorRegistry` (not the process-wide default) lets tests build many apps in
one process and keeps ``/metrics`` to what this gateway measured. Model labels only ever carry ids
the gateway resolved against its snapshot (or ``"-"``), so clients cannot blow up label cardinality.
Replica health is state, not an event: ``gateway_replica_healthy`` is read from the routing snapshot
when Prometheus scrapes, so it can never drift from what routing sees.
"""

from __future__ import annotations

import time
from collections import Counter as _Tally
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from common.metrics import TTFT_BUCKETS
from gateway.circuit import STATE_CODES, Circuit
from gateway.usage_series import percentile

if TYPE_CHECKING:
    from gateway.upstreams import Snapshot

NO_MODEL = "-"


class ReplicaHealth(Collector):
    """``gateway_replica_healthy{replica,model}``: 1 or 0 per replica of the current snapshot."""

    def __init__(self) -> None:
        self.snapshot: Callable[[], Snapshot | None] = lambda: None

    def describe(self) -> Iterator[Metric]:
        return iter([self._family()])

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        snapshot = self.snapshot()
        for replica in snapshot.replicas if snapshot is not None else ():
            family.add_metric([replica.url, replica.model or NO_MODEL], 1.0 if replica.healthy else 0.0)
        return iter([family])

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("gateway_replica_healthy",
                                 "1 when routing sees the replica as healthy, else 0 (read at scrape time).",
                                 labels=["replica", "model"])


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("gateway_requests_total", "Requests answered, by model, endpoint and status.",
                                ["model", "endpoint", "status"], registry=self.registry)
        self.latency = Histogram(
            "gateway_request_duration_seconds", "Time from request to last byte sent, by model and endpoint.",
            ["model", "endpoint"], registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.in_flight = Gauge("gateway_in_flight_requests", "Requests being proxied now, by model.",
                               ["model"], registry=self.registry)
        self.retries = Counter("gateway_upstream_retries_total",
                               "Attempts that failed before the first byte and were retried elsewhere.",
                               ["model", "reason"], registry=self.registry)
        # Per-replica series are labelled by the replica URL: bounded by the configured/registered fleet.
        self.replica_failures = Counter("gateway_replica_failures_total",
                                        "Attempts on a replica that failed before the first byte, by reason.",
                                        ["replica", "reason"], registry=self.registry)
        self.circuit_state = Gauge("gateway_circuit_state",
                                   "Circuit breaker per replica: 0 closed, 1 half-open, 2 open.",
                                   ["replica"], registry=self.registry)
        self.replica_requests = Counter("gateway_replica_requests_total",
                                        "Requests a replica accepted (answered below 500 with a first byte).",
                                        ["replica"], registry=self.registry)
        self.ttft = Histogram("gateway_time_to_first_token_seconds",
                              "Streamed answers: time from request to the first content chunk, by model.",
                              ["model"], registry=self.registry, buckets=TTFT_BUCKETS)
        self.prompt_tokens = Counter("gateway_prompt_tokens_total", "Prompt tokens the workers reported, by model.",
                                     ["model"], registry=self.registry)
        self.completion_tokens = Counter("gateway_completion_tokens_total",
                                         "Completion tokens the workers reported, by model.", ["model"],
                                         registry=self.registry)
        self.rate_limited = Counter("gateway_rate_limited_total",
                                    "Requests refused with 429 for a key over its rpm or tpm, by model.",
                                    ["model"], registry=self.registry)
        self.replica_health = ReplicaHealth()
        self.registry.register(self.replica_health)
        self.served: _Tally[str] = _Tally()  # the same count, readable by /services
        self.recent = RecentLatency()  # per replica, for the console's p50/p95 and requests/s
        # Labelled children by label values: ``.labels()`` validates and locks on every call, which
        # showed up per request; the label sets are bounded (resolved models, endpoints, replicas).
        self._children: dict[tuple[object, ...], Any] = {}

    def child(self, metric: Counter | Gauge | Histogram, *values: str) -> Any:
        """``metric.labels(*values)``, created once and then reused."""
        key = (id(metric), *values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def record_circuit(self, replica: str, circuit: Circuit) -> None:
        self.child(self.circuit_state, replica).set(STATE_CODES[circuit.state])

    def observe(self, model: str, endpoint: str, status: int, seconds: float) -> None:
        self.child(self.requests, model, endpoint, str(status)).inc()
        self.child(self.latency, model, endpoint).observe(seconds)

    def watch_snapshot(self, snapshot: Callable[[], Snapshot | None]) -> None:
        """Read replica health from ``snapshot()`` at every scrape (the lifespan wires the live one)."""
        self.replica_health.snapshot = snapshot

    def count_tokens(self, model: str, prompt: int | None, completion: int | None) -> None:
        if prompt:
            self.child(self.prompt_tokens, model).inc(prompt)
        if completion:
            self.child(self.completion_tokens, model).inc(completion)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class InFlight:
    """The gateway's own count of open upstream requests per replica URL: routing's load signal."""

    def __init__(self) -> None:
        self._counts: _Tally[str] = _Tally()

    def acquire(self, url: str) -> None:
        self._counts[url] += 1

    def release(self, url: str) -> None:
        self._counts[url] -= 1
        if self._counts[url] <= 0:
            del self._counts[url]

    def view(self) -> Mapping[str, int]:
        """A read-only live view (routing only reads it within one synchronous call)."""
        return MappingProxyType(self._counts)


class RecentLatency:
    """Each replica's answers of the last ``window_s`` seconds (monotonic finish time, seconds taken):
    what the overview's p50/p95 latency and requests/s come from. The histogram above has the same
    facts, but bucketed and since start-up; an operator watching a replica wants "now", exactly."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._answers: dict[str, deque[tuple[float, float]]] = {}

    def record(self, replica: str, seconds: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        answers = self._answers.setdefault(replica, deque())
        answers.append((now, seconds))
        self._trim(answers, now)

    def view(self, replica: str, now: float | None = None) -> dict[str, float | None]:
        """``p50_ms``, ``p95_ms`` (nearest rank) and ``requests_per_s`` over the window."""
        now = time.monotonic() if now is None else now
        answers = self._answers.get(replica)
        if answers is not None:
            self._trim(answers, now)
        if not answers:
            return {"p50_ms": None, "p95_ms": None, "requests_per_s": 0.0}
        taken = [seconds * 1000 for _, seconds in answers]
        return {"p50_ms": round(percentile(taken, 0.5) or 0, 1), "p95_ms": round(percentile(taken, 0.95) or 0, 1),
                "requests_per_s": round(len(answers) / self.window_s, 3)}

    def _trim(self, answers: deque[tuple[float, float]], now: float) -> None:
        while answers and answers[0][0] < now - self.window_s:
            answers.popleft()
