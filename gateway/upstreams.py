"""What the gateway knows about its workers: an immutable snapshot, and the probes of static workers.

Routing reads a :class:`Snapshot` and nothing else; the registry follower (``follower.py``) produces
the same type. A probe round checks every worker's ``GET /health`` concurrently with a per-call
timeout and swaps in a new snapshot in one assignment: readers never see a half-updated table.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property

import httpx
from pydantic import ValidationError

from common.records import GPUReading, WorkerHealth

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


async def probe_replica(client: httpx.AsyncClient, previous: Replica, limit_s: float,
                        headers: Mapping[str, str] | None = None) -> Replica:
    """Ask one worker whether it is ready; never raises, a failure is an unhealthy replica.

    ``headers``: the service token when auth is on (a worker's ``/health`` is open, its ``/v1/models``
    is not)."""
    started = time.perf_counter()
    try:
        resp = await client.get(f"{previous.url}/health", timeout=limit_s, headers=headers)
        health = _parse_health(resp)
        if health is None and resp.status_code == 200:
            # An OpenAI-compatible server (e.g. vLLM) whose /health has no body: ask /v1/models.
            health = await _health_from_models(client, previous.url, limit_s, headers)
    except (httpx.HTTPError, OSError) as exc:
        return replace(previous, healthy=False, reason=f"unreachable: {_describe(exc)}",
                       latency_ms=_ms_since(started))
    latency = _ms_since(started)
    model = health.model if health else previous.model
    type_ = health.type if health else previous.type
    common = {"model": model, "type": type_, "latency_ms": latency}
    if health is not None and health.max_model_len is not None:
        common["max_model_len"] = health.max_model_len
    if resp.status_code != 200:
        state = health.status if health else f"HTTP {resp.status_code}"
        return replace(previous, healthy=False, reason=f"not ready: {state}", **common)
    if health is None:
        return replace(previous, healthy=False, reason="health answer did not name a model", **common)
    if health.status != "ok":
        return replace(previous, healthy=False, reason=f"not ready: {health.status}", **common)
    return replace(previous, healthy=True, reason=None, last_seen=time.time(), **common)


def _parse_health(resp: httpx.Response) -> WorkerHealth | None:
    try:
        return WorkerHealth.model_validate_json(resp.content)
    except ValidationError:
        return None


async def _health_from_models(client: httpx.AsyncClient, url: str, limit_s: float,
                              headers: Mapping[str, str] | None) -> WorkerHealth | None:
    resp = await client.get(f"{url}/v1/models", timeout=limit_s, headers=headers)
    try:
        card = resp.json()["data"][0]
        return WorkerHealth(status="ok", model=card["id"], type=card.get("type") or "llm",
                            engine="openai-compatible", max_model_len=card.get("max_model_len"))
    except (ValueError, KeyError, IndexError, TypeError, ValidationError):
        return None


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


class UpstreamProber:
    """The statically configured workers and their latest probe round.

    It has no task of its own: :class:`gateway.follower.Upstreams` owns the one refresh loop and calls
    :meth:`probe_once` each round, beside the registry read.
    """

    def __init__(self, client: httpx.AsyncClient, urls: Sequence[str], *, timeout: float,
                 headers: Mapping[str, str] | None = None) -> None:
        self._client = client
        self._timeout = timeout
        self._headers = headers
        self.snapshot = Snapshot(tuple(Replica(url=u) for u in urls), time.time())

    async def probe_once(self) -> Snapshot:
        """One round over every replica at once; the slowest probe is bounded by the timeout."""
        previous = self.snapshot.replicas
        probes = [probe_replica(self._client, r, self._timeout, self._headers) for r in previous]
        fresh = await asyncio.gather(*probes)
        self.snapshot = Snapshot(tuple(fresh), time.time())
        return self.snapshot
