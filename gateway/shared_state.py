"""State shared by several gateway replicas through one Redis or Valkey server (``GATEWAY_REDIS_URL``).

One gateway keeps its rate-limit buckets, key table and usage log to itself. Behind a load balancer,
replicas must agree, or a key gets its rate once per replica and a key revoked on one keeps working
on the others. With a store configured:

- rate-limit buckets live in the store (:mod:`gateway.shared_limits`), one atomic script per admission;
- the key table is merged through the store (:mod:`gateway.shared_keys`): creations and revocations
  reach every replica within :attr:`GatewaySettings.redis_sync_interval_s`;
- usage is also summed into per-minute rollups in the store (:mod:`gateway.shared_usage`), so
  ``GET /usage`` on any replica covers all of them.

The store is a shared cache, not the system of record: each replica still writes its own key file
and usage log. When the store cannot be reached, each replica falls back to what it does alone (its
own buckets, its own key table, its own log), logs one warning per outage, and tries the store again
after :data:`RETRY_S`; nothing is refused for the store being down (the usual choice of gateways and
rate limiters: LiteLLM's in-memory fallback, Kong's ``fault_tolerant``, Envoy's default failure mode).

redis-py (``redis.asyncio``) is imported only here and only when a store is configured: a single
gateway never loads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.keys import KeyStore
    from gateway.limits import Limiter
    from gateway.settings import GatewaySettings
    from gateway.shared_keys import KeySync
    from gateway.shared_limits import SharedLimiter
    from gateway.shared_usage import UsageRollup

log = logging.getLogger(__name__)

# After a failed call, the store is left alone this long before the next try: a down store costs a
# request nothing but a flag check, and a hung one costs at most one timeout per this interval.
RETRY_S = 1.0
# Connections to the store per gateway process. A burst beyond them waits for a free one (up to the
# store timeout) instead of failing: a bounded pool that raises would turn a busy second into an outage.
MAX_CONNECTIONS = 64


class SharedStore:
    """The store's client, its key names, and whether it is usable right now."""

    def __init__(self, redis: Redis, prefix: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.redis = redis
        self.prefix = prefix
        self._clock = clock
        self._down_until = 0.0
        self._down = False

    def name(self, *parts: str) -> str:
        """A name in the store under this platform's prefix: ``msp:`` + ``rl:key_1:requests``."""
        return self.prefix + ":".join(parts)

    @property
    def available(self) -> bool:
        """False for :data:`RETRY_S` after a failure: callers use their in-process fallback instead."""
        return self._clock() >= self._down_until

    @property
    def reachable(self) -> bool:
        """False from a failed call until the next one that works (what ``/health`` reports)."""
        return not self._down

    def failed(self, exc: Exception, doing: str) -> None:
        """Note a failed call; the first one of an outage is logged as a warning."""
        self._down_until = self._clock() + RETRY_S
        if not self._down:
            self._down = True
            log.warning("shared state store unreachable while %s (%s: %s): this gateway falls back to its own "
                        "limits, keys and usage log until it answers again", doing, type(exc).__name__, exc)

    def succeeded(self) -> None:
        if self._down:
            self._down = False
            log.warning("shared state store reachable again: limits, keys and usage are shared once more")

    async def aclose(self) -> None:
        await self.redis.aclose()


def run_every(interval_s: float, step: Callable[[], Awaitable[None]], name: str,
              wake: asyncio.Event | None = None) -> asyncio.Task[None]:
    """A background task calling ``step`` every ``interval_s`` (sooner when ``wake`` is set); a failed
    round is logged and the next one runs: these loops carry revocations and usage."""
    async def loop() -> None:
        while True:
            if wake is None:
                await asyncio.sleep(interval_s)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), interval_s)
                wake.clear()
            try:
                await step()
            except Exception:
                log.exception("%s round failed", name)

    return asyncio.create_task(loop(), name=name)


async def cancel(task: asyncio.Task[None] | None) -> None:
    """Stop a :func:`run_every` task and wait until it has."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass
class SharedState:
    """What a gateway shares with its peers; built and closed by the app's lifespan."""

    store: SharedStore
    limits: SharedLimiter
    keys: KeySync
    usage: UsageRollup


def connect(settings: GatewaySettings) -> SharedStore:
    """The store's client for ``GATEWAY_REDIS_URL`` (connections open on first use, not here)."""
    from redis.asyncio import BlockingConnectionPool, Redis

    pool = BlockingConnectionPool.from_url(settings.redis_url or "", max_connections=MAX_CONNECTIONS,
                                           timeout=settings.redis_timeout_s, socket_timeout=settings.redis_timeout_s,
                                           socket_connect_timeout=settings.redis_timeout_s, decode_responses=True)
    return SharedStore(Redis.from_pool(pool), settings.redis_prefix)  # the client owns (and closes) the pool


def build(settings: GatewaySettings, keys: KeyStore, fallback: Limiter) -> SharedState:
    """The shared limiter, key sync and usage rollup over one store connection."""
    from gateway.shared_keys import KeySync
    from gateway.shared_limits import SharedLimiter
    from gateway.shared_usage import UsageRollup

    store = connect(settings)
    return SharedState(store=store, limits=SharedLimiter(store, fallback),
                       keys=KeySync(store, keys, interval_s=settings.redis_sync_interval_s),
                       usage=UsageRollup(store, retention_days=settings.redis_usage_retention_days))
