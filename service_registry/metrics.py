"""Prometheus metrics of one registry app, in its own :class:`CollectorRegistry`.

Per-app (not the process-wide default) so tests can build many apps in one process. The service
label only carries ids the registry accepted, never anything a client can invent per request.
"""

from __future__ import annotations

from collections import Counter as _Tally
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from common.records import ServiceSnapshot, ServiceStatus


class RegistryMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.services = Gauge("registry_services", "Known services, by status and kind.", ["status", "kind"],
                              registry=self.registry)
        self.probe_latency = Histogram(
            "registry_probe_duration_seconds", "Time one probe of one service took, by kind.", ["kind"],
            registry=self.registry, buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.probe_failures = Counter("registry_probe_failures_total",
                                      "Probes that failed or found the service not ready, by service.",
                                      ["service"], registry=self.registry)
        self.registrations = Counter(
            "registry_registrations_total",
            "Registration events: registered, refreshed, heartbeat, deregistered, expired.",
            ["event"], registry=self.registry)
        self.rounds = Counter("registry_poll_rounds_total", "Poll rounds finished.", registry=self.registry)

    def record_snapshot(self, snapshot: ServiceSnapshot) -> None:
        """Set the per-status gauge from a snapshot, zeroing states no service is in."""
        tally = _Tally((s.status, s.kind) for s in snapshot.data)
        for status in get_args(ServiceStatus):
            for kind in ("worker", "external"):
                self.services.labels(status, kind).set(tally.get((status, kind), 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
