"""Prometheus metrics of one gateway app, in its own registry.

A per-app :class:`CollectorRegistry` (not the process-wide default) lets tests build many apps in
one process and keeps ``/metrics`` to what this gateway measured. Model labels only ever carry ids
the gateway resolved against its snapshot (or ``"-"``), so clients cannot blow up label cardinality.
"""

from __future__ import annotations

from collections import Counter as _Tally
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway.circuit import STATE_CODES, Circuit

NO_MODEL = "-"


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
        self.served: _Tally[str] = _Tally()  # the same count, readable by /services
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
