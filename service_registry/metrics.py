"""Prometheus metrics of one service registry app, in its own :class:`CollectorRegistry`.

Per-app (not the process-wide default) so tests can build many apps in one process. Events (probes,
registrations, poll rounds, requests answered) are counters; everything the snapshot knows (how many
services in which status, which replica is healthy, the GPU readings the last round collected) is read
from the latest snapshot when Prometheus scrapes, so no gauge can drift from what ``/services`` answers.
Labels only carry what the registry accepted (a registered URL, its models) or a route template, never
anything a client sends per request. Names follow the platform's convention (docs/MONITORING.md).
"""

from __future__ import annotations

from collections import Counter as _Tally
from collections.abc import Callable, Iterator
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from common.metrics import PROBE_BUCKETS, RequestMetrics, gpu_families
from common.records import ServiceKind, ServiceRecord, ServiceSnapshot, ServiceStatus
from service_registry.health import Observation

PREFIX = "service_registry"


class SnapshotCollector(Collector):
    """Gauges computed from one snapshot at scrape time."""

    def __init__(self, snapshot: Callable[[], ServiceSnapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterator[Metric]:
        return iter(self._families(ServiceSnapshot()))

    def collect(self) -> Iterator[Metric]:
        return iter(self._families(self._snapshot()))

    @staticmethod
    def _families(snapshot: ServiceSnapshot) -> list[Metric]:
        services = GaugeMetricFamily(f"{PREFIX}_services", "Known services, by status and kind.",
                                     labels=["status", "kind"])
        tally = _Tally((s.status, s.kind) for s in snapshot.data)
        for status in get_args(ServiceStatus):  # every combination, so a state nobody is in reads 0
            for kind in get_args(ServiceKind):
                services.add_metric([status, kind], tally.get((status, kind), 0))
        healthy = GaugeMetricFamily(f"{PREFIX}_replica_healthy",
                                    "1 when the replica is healthy (routable) for the model, else 0.",
                                    labels=["replica", "model"])
        for record in snapshot.data:
            for model in record.models:
                healthy.add_metric([record.url, model], 1.0 if record.status == "healthy" else 0.0)
        gpus = gpu_families(PREFIX, ["replica", "gpu"],
                            (((record.url, str(g.index)), g) for record in snapshot.data for g in record.gpus))
        return [services, healthy, *gpus]


class ServiceRegistryMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.probe_latency = Histogram(
            f"{PREFIX}_probe_duration_seconds", "Time one probe of one replica took (health and GPU stats).",
            ["replica"], registry=self.registry, buckets=PROBE_BUCKETS,
        )
        self.probe_failures = Counter(f"{PREFIX}_probe_failures_total",
                                      "Probes that failed or found the replica not ready, by replica.",
                                      ["replica"], registry=self.registry)
        self.registrations = Counter(
            f"{PREFIX}_registrations_total",
            "Registration events: registered, refreshed, heartbeat, deregistered, expired.",
            ["event"], registry=self.registry)
        self.rounds = Counter(f"{PREFIX}_poll_rounds_total", "Poll rounds finished.", registry=self.registry)
        # Registrations, heartbeats and the gateways' reads; /health and /metrics are polled, not counted.
        self.requests = RequestMetrics(PREFIX, self.registry)
        self._snapshot = ServiceSnapshot()
        self.registry.register(SnapshotCollector(lambda: self._snapshot))

    def record_snapshot(self, snapshot: ServiceSnapshot) -> None:
        """Keep the registry's newest snapshot (immutable) for the next scrape to read."""
        self._snapshot = snapshot

    def record_probe(self, record: ServiceRecord, observation: Observation) -> None:
        if observation.latency_ms is not None:
            self.probe_latency.labels(record.url).observe(observation.latency_ms / 1000)
        if observation.outcome != "ok":
            self.probe_failures.labels(record.url).inc()
