"""The gateway's own probes of its statically configured workers (``GATEWAY_WORKERS``).

A probe round checks every worker's ``GET /health`` concurrently with a per-call timeout and swaps in
a new :class:`Snapshot` in one assignment: readers never see a half-updated table. Workers the service
registry knows are probed by the registry instead (``gateway/follower.py`` reads its answer).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

import httpx
from pydantic import ValidationError

from common.probes import describe, ms_since, parse_body
from common.records import WorkerHealth
from gateway.upstreams import Replica, Snapshot


async def probe_replica(client: httpx.AsyncClient, previous: Replica, limit_s: float,
                        headers: Mapping[str, str] | None = None) -> Replica:
    """Ask one worker whether it is ready; never raises, a failure is an unhealthy replica.

    ``headers``: the service token when auth is on (a worker's ``/health`` is open, its ``/v1/models``
    is not)."""
    started = time.perf_counter()
    try:
        resp = await client.get(f"{previous.url}/health", timeout=limit_s, headers=headers)
        health = parse_body(WorkerHealth, resp)
        if health is None and resp.status_code == 200:
            # An OpenAI-compatible server (e.g. vLLM) whose /health has no body: ask /v1/models.
            health = await _health_from_models(client, previous.url, limit_s, headers)
    except (httpx.HTTPError, OSError) as exc:
        return replace(previous, healthy=False, reason=f"unreachable: {describe(exc)}",
                       latency_ms=ms_since(started))
    latency = ms_since(started)
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


async def _health_from_models(client: httpx.AsyncClient, url: str, limit_s: float,
                              headers: Mapping[str, str] | None) -> WorkerHealth | None:
    resp = await client.get(f"{url}/v1/models", timeout=limit_s, headers=headers)
    try:
        card = resp.json()["data"][0]
        return WorkerHealth(status="ok", model=card["id"], type=card.get("type") or "llm",
                            engine="openai-compatible", max_model_len=card.get("max_model_len"))
    except (ValueError, KeyError, IndexError, TypeError, ValidationError):
        return None


class UpstreamProber:
    """The statically configured workers and their latest probe round.

    It has no task of its own: :class:`gateway.upstreams.Upstreams` owns the one refresh loop and calls
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
