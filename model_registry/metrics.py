"""Prometheus metrics on a per-app registry (two apps in one process never share a metric).

Job counts and stored bytes are read at scrape time from the job runner and the catalog, so the
numbers are right after a restart without any bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from model_registry.catalog import Catalog
from model_registry.jobs import JobRunner


class _StateCollector(Collector):
    def __init__(self, catalog: Catalog, jobs: JobRunner) -> None:
        self.catalog = catalog
        self.jobs = jobs

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily("model_registry_jobs", "Jobs known to this registry, by state", labels=["state"])
        for state, count in self.jobs.counts().items():
            jobs.add_metric([state], count)
        yield jobs
        models = self.catalog.list_models()
        yield GaugeMetricFamily("model_registry_models", "Models with a model.json", value=len(models))
        yield GaugeMetricFamily("model_registry_stored_bytes", "Bytes in complete revisions",
                                value=sum(r.size for m in models for r in m.revisions))


class RegistryMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.files_served = Counter("model_registry_files_served", "Files streamed to clients",
                                    registry=self.registry)
        self._state: _StateCollector | None = None

    def bind(self, catalog: Catalog, jobs: JobRunner) -> None:
        """Attach the live state (in the lifespan, once the store is open)."""
        if self._state is not None:
            self.registry.unregister(self._state)
        self._state = _StateCollector(catalog, jobs)
        self.registry.register(self._state)
