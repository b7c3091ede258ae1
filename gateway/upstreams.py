"""What the gateway knows about its upstreams: immutable snapshots, and the :class:`Upstreams` that
keep them fresh.

Routing reads a :class:`Snapshot` and nothing else. :class:`Upstreams` owns the one background task:
each round it probes the static ``GATEWAY_WORKERS`` (``probes.py``) and reads the service registry
(``follower.py``) at once, and swaps in one merged snapshot. The request path only ever reads
``Upstreams.snapshot``; it never probes and never calls the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from common.records import GPUReading

if TYPE_CHECKING:  # both build on Replica and Snapshot from here
    from gateway.follower import RegistryFollower
    from gateway.probes import UpstreamProber

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Replica:
    """One upstream serving one model, as last seen. ``model``/``type`` survive a failed probe.

    ``url`` is the replica's key (in-flight counts and circuits hang off it). Replicas that come
    from the service registry also carry where OpenAI paths go (``api_base``), the model name the
    upstream expects, their priority (lower is preferred), capacity and GPU readings; a statically
    configured worker keeps the defaults, which mean "a worker of ours at ``{url}/v1``".
    """

    url: str
    model: str | None = None
    type: str | None = None
    healthy: bool = False
    reason: str | None = "not probed yet"
    last_seen: float | None = None  # wall-clock time of the last successful probe
    latency_ms: float | None = None  # duration of the last probe
    max_model_len: int | None = None
    source: str = "static"  # "static" (GATEWAY_WORKERS) or "registry"
    service_id: str | None = None
    kind: str = "worker"  # "worker" or "external"
    api_base: str | None = None  # None: f"{url}/v1"
    upstream_model: str | None = None  # None: the public model id
    priority: int = 0
    capacity: int | None = None  # in-flight requests it takes before it counts as saturated
    gpu_indices: tuple[int, ...] = ()
    gpus: tuple[GPUReading, ...] = ()

    @property
    def base(self) -> str:
        """Where OpenAI paths go: ``{base}/chat/completions``."""
        return self.api_base or f"{self.url}/v1"

    def name_upstream(self, public_model: str) -> str:
        return self.upstream_model or public_model


@dataclass(frozen=True)
class Snapshot:
    """Every known replica, in configured order (which makes default-model choice deterministic).

    Every request asks the same questions of the snapshot (which replicas are healthy, which models
    exist, who serves model X); the answers are computed once per snapshot and cached on it, which
    is safe because a snapshot never changes (a refresh swaps in a new one). Callers must treat the
    returned collections as read-only.
    """

    replicas: tuple[Replica, ...] = ()
    taken_at: float = 0.0

    def healthy(self) -> tuple[Replica, ...]:
        return self._healthy

    def known_models(self) -> dict[str, str | None]:
        """Model id -> type for every replica that ever said which model it serves."""
        return self._known_models

    def serving(self, model: str) -> tuple[Replica, ...]:
        """The healthy replicas of ``model``, in configured order."""
        return self._serving.get(model, ())

    @cached_property
    def silent(self) -> int:
        """How many replicas never said which model they serve (still starting, or unreachable)."""
        return sum(1 for r in self.replicas if r.model is None)

    @cached_property
    def _healthy(self) -> tuple[Replica, ...]:
        return tuple(r for r in self.replicas if r.healthy)

    @cached_property
    def _known_models(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for r in self.replicas:
            if r.model is not None:
                out.setdefault(r.model, r.type)
        return out

    @cached_property
    def _serving(self) -> dict[str, tuple[Replica, ...]]:
        out: dict[str, list[Replica]] = {}
        for r in self._healthy:
            if r.model is not None:
                out.setdefault(r.model, []).append(r)
        return {model: tuple(rs) for model, rs in out.items()}


class Upstreams:
    """Owns the merged snapshot and the one task that refreshes it every ``interval_s``."""

    def __init__(self, prober: UpstreamProber | None, follower: RegistryFollower | None, *, interval_s: float,
                 timeout_s: float, on_recovered: Callable[[Iterable[str]], None] = lambda _: None) -> None:
        """``prober``: the static workers (``GATEWAY_WORKERS``), ``follower``: the service registry; either
        may be None. ``on_recovered`` gets the URLs that turned healthy in a round (circuits reset)."""
        self.prober = prober
        self.follower = follower
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
