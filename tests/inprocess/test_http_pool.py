"""The sharded upstream pool (common/http_pool.py) over a real loopback server: requests spread over
the shards, every way a response can end gives its shard back, and the limits add up to the total."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from common.http_pool import ShardedTransport, pooled_client, shard_count
from tests.helpers.ports import free_port
from tests.helpers.servers import serve


def slow_app() -> FastAPI:
    app = FastAPI()
    gate = asyncio.Event()
    app.state.gate = gate

    @app.get("/wait")
    async def wait() -> dict[str, bool]:
        await gate.wait()
        return {"ok": True}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks():
            for i in range(50):
                yield f"chunk {i}\n".encode()
                await asyncio.sleep(0.005)

        return StreamingResponse(chunks())

    return app


def test_the_limits_are_split_so_they_add_up_to_at_least_the_total() -> None:
    assert shard_count(64) == 8 and shard_count(8) == 1 and shard_count(None) == 1 and shard_count(0) == 1
    transport = ShardedTransport(httpx.Limits(max_connections=512, max_keepalive_connections=64))
    assert len(transport.shards) == 8
    pool = transport.shards[0]._pool
    assert (pool._max_connections, pool._max_keepalive_connections) == (64, 8)


async def test_concurrent_requests_spread_over_the_shards_and_all_give_them_back() -> None:
    app = slow_app()
    async with serve(app) as url, pooled_client(httpx.Limits(max_connections=64, max_keepalive_connections=32),
                                                timeout=10) as client:
        transport = client._transport
        assert isinstance(transport, ShardedTransport) and len(transport.shards) == 4
        calls = [asyncio.create_task(client.get(f"{url}/wait")) for _ in range(32)]
        for _ in range(200):
            if sum(transport.in_flight) == 32:
                break
            await asyncio.sleep(0.01)
        assert transport.in_flight == [8, 8, 8, 8]  # least-busy first: an even spread
        app.state.gate.set()
        assert all(r.json() == {"ok": True} for r in await asyncio.gather(*calls))
        assert transport.in_flight == [0, 0, 0, 0]


async def test_streamed_abandoned_and_failed_requests_give_their_shard_back() -> None:
    async with serve(slow_app()) as url, pooled_client(httpx.Limits(max_keepalive_connections=16),
                                                       timeout=10) as client:
        transport = client._transport
        async with client.stream("GET", f"{url}/stream") as response:  # read to the end
            assert len([line async for line in response.aiter_lines()]) == 50
        async with client.stream("GET", f"{url}/stream") as response:  # abandoned after one chunk
            async for _ in response.aiter_bytes():
                break
        assert sum(transport.in_flight) == 0
        with pytest.raises(httpx.ConnectError):  # nobody listens there: the shard is given back too
            await client.get(f"http://127.0.0.1:{free_port()}/")
        assert sum(transport.in_flight) == 0
        cancelled = asyncio.create_task(client.get(f"{url}/wait"))
        await asyncio.sleep(0.2)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert sum(transport.in_flight) == 0
