"""Prometheus metrics on a per-app registry (two apps in one process never share a metric).

Job counts, running jobs' progress, models and stored bytes are read at scrape time from the job
runner and the catalog, so the numbers are right after a restart without any bookkeeping (the catalog
reads the store: ``/metrics`` renders in a thread). Names follow the platform's convention
(docs/MONITORING.md): ``model_registry_`` prefix, base units, ``_total`` counters.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from common.metrics import RequestMetrics
from model_registry.catalog import Catalog
from model_registry.jobs import JobRunner
from model_registry.records import JobRecord, ModelRecord

PREFIX = "model_registry"


class StateCollector(Collector):
    """Job, model and storage gauges from the live job runner and catalog (nothing until bound)."""

    def __init__(self) -> None:
        self.catalog: Catalog | None = None
        self.jobs: JobRunner | None = None

    def describe(self) -> Iterator[Metric]:
        return iter(_families({}, [], []))

    def collect(self) -> Iterator[Metric]:
        if self.catalog is None or self.jobs is None:
            return iter(())
        return iter(_families(self.jobs.counts(), self.jobs.running(), self.catalog.list_models()))


def _families(counts: dict[str, int], running: list[JobRecord], models: list[ModelRecord]) -> list[Metric]:
    jobs = GaugeMetricFamily(f"{PREFIX}_jobs", "Jobs known to this registry, by state.", labels=["state"])
    for state, count in counts.items():
        jobs.add_metric([state], count)
    done = GaugeMetricFamily(f"{PREFIX}_job_progress_bytes", "Bytes a running job has stored so far.",
                             labels=["job_id", "model"])
    total = GaugeMetricFamily(f"{PREFIX}_job_total_bytes",
                              "Bytes a running job will store in all (0 until the source has said).",
                              labels=["job_id", "model"])
    for job in running:
        done.add_metric([job.id, job.model_id], job.bytes_done)
        total.add_metric([job.id, job.model_id], job.bytes_total)
    return [
        jobs, done, total,
        GaugeMetricFamily(f"{PREFIX}_models", "Models with a model.json in the store.", value=len(models)),
        GaugeMetricFamily(f"{PREFIX}_stored_bytes", "Bytes in complete revisions.",
                          value=sum(r.size for m in models for r in m.revisions)),
    ]


class ModelRegistryMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.files_served = Counter(f"{PREFIX}_files_served_total", "Model files streamed to clients.",
                                    registry=r)
        # /health and /metrics are polled all the time and not counted.
        self.requests = RequestMetrics(PREFIX, r)
        self.state = StateCollector()
        r.register(self.state)

    def bind(self, catalog: Catalog, jobs: JobRunner) -> None:
        """Attach the live state (in the lifespan, once the store is open)."""
        self.state.catalog, self.state.jobs = catalog, jobs
