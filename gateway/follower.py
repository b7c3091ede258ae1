"""The gateway's view of the service registry: its ``GET /services``, mapped onto routing's :class:`Replica`.

:class:`gateway.upstreams.Upstreams` asks :class:`RegistryFollower` once a round, beside the probes of
the static workers, and merges both into one :class:`Snapshot`.

While the registry is unreachable the last registry view stays in place (and ``/health`` says so).
A registry that comes back after a restart has forgotten every worker until they heartbeat again,
so for ``settle_s`` after such a return, replicas missing from its answer are kept as last seen,
and records it has not probed yet keep the health the gateway last knew.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from common.records import ServiceRecord, ServiceSnapshot
from gateway.upstreams import Replica
from service_registry.client import RegistryClient, RegistryUnavailableError

log = logging.getLogger(__name__)

NOT_PROBED = "not probed yet"


def replicas_of(record: ServiceRecord) -> list[Replica]:
    """One :class:`Replica` per model the service serves (an external may map several)."""
    healthy = record.status == "healthy"
    reason = None if healthy else (record.reason or record.status)
    return [
        Replica(
            url=record.url, model=model, type=record.type, healthy=healthy, reason=reason,
            last_seen=record.last_seen, latency_ms=record.probe_latency_ms, max_model_len=record.max_model_len,
            source="registry", service_id=record.id, kind=record.kind, api_base=record.api_base,
            upstream_model=record.upstream_model(model) if record.kind == "external" else None,
            priority=record.priority, capacity=record.capacity, gpu_indices=record.gpu_indices,
            gpus=record.gpus,
        )
        for model in record.models
    ]


def merge_registry_view(previous: tuple[Replica, ...], fresh: list[Replica], *, settling: bool) -> tuple[Replica, ...]:
    """The registry's replicas, patched while a restarted registry is still re-learning the cluster.

    While ``settling``: a record the registry has not probed yet keeps the last known health, and a
    replica the registry no longer lists is kept as it was. Otherwise the registry's answer stands.
    """
    if not settling:
        return tuple(fresh)
    before = {(r.url, r.model): r for r in previous}
    out: list[Replica] = []
    for replica in fresh:
        old = before.get((replica.url, replica.model))
        if old is not None and not replica.healthy and replica.reason == NOT_PROBED:
            replica = replace(replica, healthy=old.healthy, reason=old.reason, last_seen=old.last_seen)
        out.append(replica)
    seen = {(r.url, r.model) for r in fresh}
    out += [r for key, r in before.items() if key not in seen]
    return tuple(out)


class RegistryFollower:
    """The last good registry view, and whether the registry answers right now."""

    def __init__(self, client: RegistryClient, *, settle_s: float) -> None:
        self.client = client
        self.settle_s = settle_s
        self.replicas: tuple[Replica, ...] = ()
        self.services = ServiceSnapshot()
        self.reachable = False
        self.last_ok: float | None = None
        self.last_error: str | None = "not asked yet"
        self._settle_until = 0.0

    async def refresh_once(self) -> None:
        """Ask the registry once; on failure keep everything as it was and remember why."""
        try:
            services = await self.client.services()
        except RegistryUnavailableError as exc:
            if self.reachable:
                log.warning("service registry unreachable; routing from the last snapshot: %s", exc)
            self.reachable, self.last_error = False, str(exc)
            return
        now = time.monotonic()
        returned = self.last_ok is not None and (not self.reachable or services.round < self.services.round)
        if returned:
            log.info("service registry is back (round %d); keeping known replicas for %.0fs",
                     services.round, self.settle_s)
            self._settle_until = now + self.settle_s
        fresh = [r for record in services.data for r in replicas_of(record)]
        self.replicas = merge_registry_view(self.replicas, fresh, settling=now < self._settle_until)
        self.services = services
        self.reachable, self.last_ok, self.last_error = True, time.time(), None

    def health(self) -> dict[str, Any]:
        return {"url": self.client.base_url, "reachable": self.reachable, "last_ok": self.last_ok,
                "last_error": self.last_error, "round": self.services.round,
                "services": len(self.services.data)}
