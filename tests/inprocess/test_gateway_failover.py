"""Failover and error paths against deliberately broken upstreams (raw asyncio stub workers)."""

from __future__ import annotations

import json

import httpx

from tests.helpers.servers import gateway
from tests.helpers.stub_worker import StubWorker

CHAT_BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=15, trust_env=False) as client:
        return await client.get(url)


async def post_chat(url: str, body: object = CHAT_BODY, **kw: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=15, trust_env=False) as client:
        return await client.post("/v1/chat/completions", json=body, **kw)


async def test_failover_when_a_replica_answers_500() -> None:
    async with StubWorker("m", "500") as bad, StubWorker("m") as good:
        async with gateway([bad.url, good.url], ordered=True) as (url, state):
            resp = await post_chat(url)
            assert resp.status_code == 200
            assert resp.json() == {"served_by": good.url}
            assert bad.hits == 1 and good.hits == 1
            assert state.in_flight.view() == {}
            metrics = (await get(f"{url}/metrics")).text
            assert 'gateway_upstream_retries_total{model="m",reason="upstream_5xx"} 1.0' in metrics


async def test_failover_when_a_replica_drops_the_connection() -> None:
    async with StubWorker("m", "close") as bad, StubWorker("m") as good:
        async with gateway([bad.url, good.url], ordered=True) as (url, _):
            resp = await post_chat(url)
            assert resp.status_code == 200 and resp.json() == {"served_by": good.url}
            assert bad.hits == 1


async def test_failover_when_a_replica_times_out() -> None:
    async with StubWorker("m", "hang") as slow, StubWorker("m") as good:
        async with gateway([slow.url, good.url], ordered=True, read_timeout_s=0.3) as (url, state):
            resp = await post_chat(url)
            assert resp.status_code == 200 and resp.json() == {"served_by": good.url}
            assert slow.hits == 1
            assert 'reason="timeout"' in state.metrics.render().decode()


async def test_failover_when_a_replica_went_away_after_the_probe() -> None:
    async with StubWorker("m") as gone, StubWorker("m") as good:
        async with gateway([gone.url, good.url], ordered=True) as (url, state):
            assert all(r.healthy for r in state.upstreams.snapshot.replicas)
            await gone.stop()  # the snapshot still says healthy: connects are now refused
            resp = await post_chat(url)
            assert resp.status_code == 200 and resp.json() == {"served_by": good.url}


async def test_all_replicas_failing_is_503_in_openai_shape() -> None:
    async with StubWorker("m", "500") as one, StubWorker("m", "close") as two:
        async with gateway([one.url, two.url]) as (url, state):
            resp = await post_chat(url, headers={"x-request-id": "req-123"})
            assert resp.status_code == 503
            err = resp.json()["error"]
            assert err["code"] == "service_unavailable" and err["type"] == "server_error"
            assert one.url in err["message"] and two.url in err["message"]
            assert resp.headers["x-request-id"] == "req-123"
            assert one.hits == 1 and two.hits == 1
            assert state.in_flight.view() == {}


async def test_retries_are_bounded_by_settings() -> None:
    async with StubWorker("m", "500") as a, StubWorker("m", "500") as b, StubWorker("m", "500") as c:
        async with gateway([a.url, b.url, c.url], retries=1) as (url, _):
            resp = await post_chat(url)
            assert resp.status_code == 503
            assert a.hits + b.hits + c.hits == 2


async def test_unreachable_worker_means_503_not_404() -> None:
    async with StubWorker("m") as stub:
        dead = stub.url
    async with gateway([dead]) as (url, state):
        assert state.upstreams.snapshot.replicas[0].reason.startswith("unreachable")
        resp = await post_chat(url)
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "service_unavailable"
        health = (await get(f"{url}/health")).json()
        assert health["status"] == "degraded" and health["healthy_replicas"] == 0


async def test_failure_after_the_first_byte_ends_the_stream_with_one_error_event() -> None:
    async with StubWorker("m", "midstream") as stub:
        async with gateway([stub.url]) as (url, state):
            resp = await post_chat(url, {**CHAT_BODY, "stream": True})
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            events = [e for e in resp.text.split("\n\n") if e]
            assert events[0] == 'data: {"choices": [{"delta": {"content": "Hel"}}]}'
            assert len(events) == 2
            error = json.loads(events[1].removeprefix("data: "))["error"]
            assert error["code"] == "upstream_error" and error["type"] == "server_error"
            assert stub.hits == 1  # no failover once bytes went out
            assert state.in_flight.view() == {}


async def test_gpu_stats_of_a_failing_worker_is_an_error_entry() -> None:
    async with StubWorker("m") as stub:
        async with StubWorker("n") as gone:
            pass
        async with gateway([stub.url, gone.url]) as (url, _):
            resp = await get(f"{url}/gpu-stats")
            assert resp.status_code == 200
            rows = {row["url"]: row for row in resp.json()["data"]}
            assert rows[stub.url]["stats"] is None and "500" in rows[stub.url]["error"]
            assert rows[gone.url]["model"] is None and "not healthy" in rows[gone.url]["error"]
