"""The one background task that keeps the snapshot fresh.

Each round probes every service of the current snapshot at once (``asyncio.gather``, each probe
bounded by the probe timeout) through the app's one ``httpx.AsyncClient``, then merges all results and
expires silent workers in a single swap. Rounds start every ``poll_interval_s``; a slow round delays
the next one rather than overlapping it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import httpx

from common.records import ServiceSnapshot
from service_registry.metrics import ServiceRegistryMetrics
from service_registry.probes import probe
from service_registry.registry import Registry
from service_registry.settings import StaticUpstream

log = logging.getLogger(__name__)


class Poller:
    def __init__(self, registry: Registry, client: httpx.AsyncClient, statics: Mapping[str, StaticUpstream],
                 metrics: ServiceRegistryMetrics, *, interval_s: float, timeout_s: float,
                 worker_headers: Mapping[str, str] | None = None) -> None:
        self._registry = registry
        self._client = client
        self._statics = statics  # holds the API keys; records never do
        self._metrics = metrics
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        # Sent to workers only (the service token when auth is on); externals get their own key.
        self._worker_headers = dict(worker_headers or {})

    async def poll_once(self) -> ServiceSnapshot:
        targets = self._registry.snapshot.data
        observations = await asyncio.gather(
            *(probe(self._client, r, self._statics.get(r.id), self._timeout_s, worker_headers=self._worker_headers)
              for r in targets))
        for record, obs in zip(targets, observations, strict=True):
            self._metrics.record_probe(record, obs)
        result = self._registry.apply_round({r.id: o for r, o in zip(targets, observations, strict=True)},
                                            now=time.time())
        for service_id in result.expired:
            log.info("service %s expired: no heartbeat within its TTL", service_id)
            self._metrics.registrations.labels("expired").inc()
        self._metrics.rounds.inc()
        self._metrics.record_snapshot(result.snapshot)
        return result.snapshot

    async def run(self) -> None:
        """Poll forever; a bug in one round is logged and the next round still runs."""
        while True:
            started = time.monotonic()
            try:
                await self.poll_once()
            except Exception:
                log.exception("registry poll round failed")
            await asyncio.sleep(max(0.0, self._interval_s - (time.monotonic() - started)))
