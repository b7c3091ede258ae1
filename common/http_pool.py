"""An httpx transport that splits one connection pool into several small ones.

httpcore's pool walks *every* connection it holds on each request and each response close (expiry
and idleness checks, one ``select``/``poll`` syscall per connection), so its cost per request grows
with the number of open connections. With 64 concurrent calls to one worker, a profile of the
gateway put 52 % of its time in ``AsyncConnectionPool._assign_requests_to_connections``, and the
gateway's embeddings rate fell from 173/s at 16 clients to 101/s at 64 (docs/BENCHMARKS.md). The same
pool in a benchmark's own client halved the rate it could deliver.

``ShardedTransport`` keeps the client's API (it is an ``httpx.AsyncBaseTransport``) and holds several
``httpx.AsyncHTTPTransport`` shards, each with its share of the limits; a request goes to the shard
with the fewest requests in flight, so each pool stays at about ``SHARD_CONNECTIONS`` connections and
the walk stays short. A response releases its shard when its stream is closed, which httpx does for
every response (read, streamed or abandoned), so the in-flight counts cannot leak.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

# Connections per shard at which httpcore's per-request walk is still cheap (a few syscalls).
SHARD_CONNECTIONS = 8


def shard_count(max_keepalive_connections: int | None) -> int:
    """Shards for a pool that keeps up to ``max_keepalive_connections`` alive (at least one)."""
    return max(1, math.ceil((max_keepalive_connections or SHARD_CONNECTIONS) / SHARD_CONNECTIONS))


class _Release(httpx.AsyncByteStream):
    """A response stream that calls ``release`` once, when it is closed."""

    def __init__(self, stream: Any, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._release is not None:
                release, self._release = self._release, None
                release()


class ShardedTransport(httpx.AsyncBaseTransport):
    """Several ``AsyncHTTPTransport`` pools behind one transport; ``limits`` is the total, split evenly."""

    def __init__(self, limits: httpx.Limits, **transport_options: Any) -> None:
        count = shard_count(limits.max_keepalive_connections)

        def share(value: int | None) -> int | None:
            return None if value is None else max(1, math.ceil(value / count))

        shard_limits = httpx.Limits(max_connections=share(limits.max_connections),
                                    max_keepalive_connections=share(limits.max_keepalive_connections),
                                    keepalive_expiry=limits.keepalive_expiry)
        self.shards = [httpx.AsyncHTTPTransport(limits=shard_limits, **transport_options) for _ in range(count)]
        self.in_flight = [0] * count

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = min(range(len(self.shards)), key=self.in_flight.__getitem__)
        self.in_flight[index] += 1
        try:
            response = await self.shards[index].handle_async_request(request)
        except BaseException:
            self.in_flight[index] -= 1
            raise
        response.stream = _Release(response.stream, lambda: self._done(index))
        return response

    def _done(self, index: int) -> None:
        self.in_flight[index] -= 1

    async def aclose(self) -> None:
        for shard in self.shards:
            await shard.aclose()


def pooled_client(limits: httpx.Limits, **client_options: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` over a ``ShardedTransport`` with ``limits`` in all. ``trust_env`` is
    off: a proxy from the environment must never sit between our own services."""
    return httpx.AsyncClient(transport=ShardedTransport(limits), trust_env=False, **client_options)
