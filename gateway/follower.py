"""Where the gateway's snapshot comes from: static workers it probes itself, the service registry, or both.

:class:`Upstreams` owns the one background task. Each round it probes the static ``GATEWAY_WORKERS``
and reads the registry's ``GET /services`` at once, maps the registry's records onto routing's
:class:`Replica` type and swaps in one merged :class:`Snapshot`. The request path only ever reads
``Upstreams.snapshot``; it never calls the registry.

While the registry is unreachable the last registry view stays in place (and ``/health`` says so).
A registry that comes back after a restart has forgotten every worker until they heartbeat again,
so for ``settle_s`` after such a return, replicas missing from its answer are kept as last seen,
and records it has not probed yet keep the health the gateway last knew.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

import httpx

from common.records import ServiceRecord, ServiceSnapshot
from gateway.upstreams import Replica, Snapshot, UpstreamProber
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


class Upstreams:
    """Owns the merged snapshot and the one task that refreshes it every ``interval_s``."""

    def __init__(self, client: httpx.AsyncClient, workers: list[str], registry: RegistryClient | None, *,
                 interval_s: float, timeout_s: float, settle_s: float,
                 on_recovered: Callable[[Iterable[str]], None] = lambda _: None,
                 headers: Mapping[str, str] | None = None) -> None:
        """``headers``: sent on every probe of a static worker (the service token when auth is on)."""
        self.prober = UpstreamProber(client, workers, timeout=timeout_s, headers=headers) if workers else None
        self.follower = RegistryFollower(registry, settle_s=settle_s) if registry is not None else None
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._on_recovered = on_recovered
        self.snapshot = self._merge()
        self._task: asyncio.Task[None] | None = None

    async def refresh_once(self) -> Snapshot:
        """Probe static workers and read the registry concurrently, then swap in one snapshot."""
        work = []
        if self.prober is not None:
            work.append(self.prober.probe_once())
        if self.follower is not None:
            work.append(self.follower.refresh_once())
        await asyncio.gather(*work)
        previous = {r.url for r in self.snapshot.replicas if not r.healthy}
        self.snapshot = self._merge()
        recovered = previous & {r.url for r in self.snapshot.healthy()}
        if recovered:
            self._on_recovered(recovered)
        return self.snapshot

    def _merge(self) -> Snapshot:
        """Registry replicas first; a static worker the registry also lists appears once."""
        from_registry = self.follower.replicas if self.follower is not None else ()
        listed = {r.url for r in from_registry}
        static = tuple(r for r in (self.prober.snapshot.replicas if self.prober else ()) if r.url not in listed)
        return Snapshot(from_registry + static, time.time())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.refresh_once()
            except Exception:  # a bug here must not stop routing updates for good
                log.exception("upstream refresh round failed")

    async def start(self) -> None:
        """Refresh once before serving, so a freshly started gateway routes at once, then keep going."""
        try:
            await asyncio.wait_for(self.refresh_once(), timeout=self._timeout_s + 1.0)
        except TimeoutError:
            log.warning("first refresh round did not finish in time; serving with what is known")
        self._task = asyncio.create_task(self._run(), name="gateway-upstreams")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
