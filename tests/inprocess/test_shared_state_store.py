"""The shared state pieces against a real redis-server: the Lua buckets, the key merge, the usage rollup.

Each "replica" here is its own store connection with its own in-process objects, as two gateway
processes would have; only the store is shared. The gateway-process test is tests/e2e/test_shared_gateways.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.auth import Principal, Role, digest
from gateway.keys import KeyRequest, KeyStore
from gateway.limits import Limiter, RateLimitError
from gateway.settings import GatewaySettings
from gateway.shared_keys import KeySync
from gateway.shared_limits import SharedLimiter
from gateway.shared_state import SharedStore, connect
from gateway.shared_usage import UsageRollup
from gateway.usage import utc_iso
from tests.helpers.auth import ADMIN, PROMPT, authed_worker, bearer, create_key, keyed_gateway
from tests.helpers.polling import eventually
from tests.helpers.redis_server import RedisServer, redis_server

pytestmark = pytest.mark.e2e  # a real redis-server process


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as running:
        yield running


@pytest.fixture
async def stores(server: RedisServer) -> AsyncIterator[list[SharedStore]]:
    """Two replicas' connections to the one server."""
    # A generous timeout: on a busy test machine a slow answer must not read as a store that is down.
    settings = GatewaySettings(_env_file=None, redis_url=server.url, redis_timeout_s=5.0)
    made = [connect(settings), connect(settings)]
    try:
        yield made
    finally:
        for store in made:
            await store.aclose()


async def test_a_burst_split_across_replicas_admits_exactly_the_rpm(stores: list[SharedStore]) -> None:
    key = Principal("key_burst", Role.USER, rpm=5)
    limiters = [SharedLimiter(store, Limiter()) for store in stores]
    # More at once than a replica has store connections: the extra ones wait for one, never fall back.
    outcomes = await asyncio.gather(*(limiters[i % 2].acquire(key) for i in range(300)), return_exceptions=True)
    admitted = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, RateLimitError)]
    assert len(admitted) == 5 and len(refused) == 295
    assert all(store.available for store in stores)
    # The same 429 the in-process limiter gives: one request back every 12 s at 5 per minute.
    assert refused[0].headers["Retry-After"] == "12"
    assert refused[0].headers["x-ratelimit-remaining-requests"] == "0"
    assert "requests per minute (limit 5)" in refused[0].message
    assert limiters[1].headers(key)["x-ratelimit-limit-requests"] == "5"


async def test_tokens_charged_on_one_replica_refuse_on_the_other(stores: list[SharedStore]) -> None:
    key = Principal("key_tokens", Role.USER, tpm=60)
    first, second = (SharedLimiter(store, Limiter()) for store in stores)
    grant = await first.acquire(key)
    grant.charge(90)  # one long answer overdraws the shared bucket, charged off the request path
    await first.drain()
    with pytest.raises(RateLimitError) as refused:
        await second.acquire(key)
    assert refused.value.headers["Retry-After"] == "31"  # 30 tokens owed, then one, at one a second
    assert "tokens per minute (limit 60)" in refused.value.message
    assert await second.acquire(Principal("free", Role.USER)) is not None  # no limits: no store call


async def test_a_down_store_falls_back_to_this_replicas_own_buckets(
        server: RedisServer, stores: list[SharedStore], caplog: pytest.LogCaptureFixture) -> None:
    key = Principal("key_down", Role.USER, rpm=2)
    limiter = SharedLimiter(stores[0], Limiter())
    await limiter.acquire(key)
    server.stop()
    with caplog.at_level(logging.WARNING, logger="gateway.shared_state"):
        await limiter.acquire(key)  # served by the in-process bucket, full at 2
        await limiter.acquire(key)
        with pytest.raises(RateLimitError):
            await limiter.acquire(key)
    assert not stores[0].available
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1  # one warning per outage, not one per request


def replica_keys(folder: Path, store: SharedStore) -> tuple[KeyStore, KeySync]:
    keys = KeyStore(folder / "keys.json")
    keys.load()
    return keys, KeySync(store, keys, interval_s=0.2)


async def test_keys_made_and_revoked_anywhere_reach_every_replica(tmp_path: Path, server: RedisServer,
                                                                  stores: list[SharedStore]) -> None:
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    keys_a, sync_a = replica_keys(tmp_path / "a", stores[0])
    keys_b, sync_b = replica_keys(tmp_path / "b", stores[1])
    made = await keys_a.create(KeyRequest(name="shared", rpm=7))
    await sync_a.sync()
    await sync_b.sync()
    found = keys_b.lookup(digest(made.key))
    assert found is not None and (found.key_id, found.rpm) == (made.id, 7)
    await keys_b.revoke(made.id)
    await sync_b.sync()
    await sync_a.sync()
    assert keys_a.lookup(digest(made.key)) is None
    # Each replica wrote what it took in to its own file: a restart without the store still refuses it.
    reloaded = KeyStore(tmp_path / "a" / "keys.json")
    reloaded.load()
    assert reloaded.lookup(digest(made.key)) is None and reloaded.known_id(digest(made.key)) == made.id
    # An emptied store (a restarted one without persistence) is rebuilt from the replicas' own tables,
    # and a revocation never comes back to life.
    server.client().flushall()
    await sync_a.sync()
    rows = server.client().hgetall("msp:keys")
    assert '"revoked_at":null' not in rows[made.id]


def line(key_id: str, model: str, status: int, tokens: int, when: float) -> dict[str, Any]:
    return {"time": utc_iso(when), "key_id": key_id, "model": model, "endpoint": "/v1/chat/completions",
            "status": status, "prompt_tokens": 1, "completion_tokens": tokens - 1, "total_tokens": tokens}


async def test_usage_from_either_replica_covers_both(server: RedisServer, stores: list[SharedStore]) -> None:
    rollups = [UsageRollup(store, retention_days=2) for store in stores]
    minute = (time.time() // 60 - 10) * 60  # the start of a minute, inside the retention
    rollups[0].add(line("key_a", "llama3:8b", 200, 10, minute + 5))
    rollups[1].add(line("key_b", "llama3:8b", 429, 0, minute + 50))
    rollups[1].add(line("key_b", "other", 200, 4, minute + 65))
    rollups[1].add({"time": utc_iso(minute), "event": "key_created", "endpoint": "/admin/keys"})  # audit: no request
    await rollups[1].flush()

    async def own_log(since: datetime | None, until: datetime | None) -> dict[str, Any]:
        raise AssertionError("the store answered, so no replica's own log is read")

    everything = await rollups[0].summary(None, None, own_log)  # flushes its own line first
    assert everything["scope"] == "all gateways"
    assert (everything["requests"], everything["errors"], everything["total_tokens"]) == (3, 1, 14)
    assert everything["by_model"]["llama3:8b"]["requests"] == 2  # a ':' in a model id survives
    assert everything["by_key"]["key_b"] == {"requests": 2, "errors": 1, "prompt_tokens": 2,
                                             "completion_tokens": 2, "total_tokens": 4}
    # Windows are whole minutes: a since/until inside the first minute counts all of it, not the next.
    first = await rollups[1].summary(datetime.fromtimestamp(minute + 30, UTC),
                                     datetime.fromtimestamp(minute + 31, UTC), own_log)
    assert first["requests"] == 2 and "other" not in first["by_model"]


async def test_usage_with_the_store_down_answers_from_this_replica_and_says_so(
        server: RedisServer, stores: list[SharedStore]) -> None:
    rollup = UsageRollup(stores[0], retention_days=2)
    server.stop()
    rollup.add(line("key_a", "m", 200, 3, time.time()))

    async def own_log(since: datetime | None, until: datetime | None) -> dict[str, Any]:
        return {"object": "usage.summary", "requests": 1}

    summary = await rollup.summary(None, None, own_log)
    assert summary == {"object": "usage.summary", "requests": 1, "scope": "this gateway"}
    assert rollup._pending  # kept for when the store is back


async def test_a_gateway_started_with_the_store_down_serves_alone_then_joins(tmp_path: Path) -> None:
    """Start-up does not wait for the store: a limited key is served from the gateway's own buckets,
    and a key made meanwhile reaches the store once it is up (pushed again after the outage)."""
    server = RedisServer(tmp_path)  # its port is picked, nothing listens there yet
    async with authed_worker("chat") as chat, keyed_gateway(tmp_path, [chat], redis_url=server.url,
                                                            redis_timeout_s=5.0) as (url, state, _):
        made = await create_key(url, name="early", rpm=2)
        async with httpx.AsyncClient(base_url=url, timeout=15, trust_env=False) as client:
            body = {"model": "chat", "messages": PROMPT, "max_tokens": 2}
            codes = [(await client.post("/v1/chat/completions", json=body, headers=bearer(made["key"]))).status_code
                     for _ in range(3)]
            assert codes == [200, 200, 429]  # the gateway's own bucket while the store is down
            assert state.shared is not None and not state.shared.store.available
            health = (await client.get("/health")).json()
            assert health["status"] == "degraded" and health["shared_state"] == {"reachable": False}
            try:
                server.start()
                rows = await eventually(lambda: server.client().hgetall("msp:keys"), "the key pushed to the store",
                                        within_s=10.0, every_s=0.1)
                assert made["id"] in rows
                usage = await client.get("/usage", headers=ADMIN)
                assert usage.json()["scope"] == "all gateways"  # the counts kept meanwhile, added now
                assert usage.json()["by_key"][made["id"]]["requests"] == 3
                assert (await client.get("/health")).json()["shared_state"] == {"reachable": True}
            finally:
                server.stop()
