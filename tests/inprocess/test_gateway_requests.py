"""What the gateway does with a request before and around the upstream call (stub workers)."""

from __future__ import annotations

import json

import httpx

from tests.helpers.servers import gateway
from tests.helpers.stub_worker import StubWorker


async def call(method: str, url: str, **kw: object) -> httpx.Response:
    async with httpx.AsyncClient(timeout=15, trust_env=False) as client:
        return await client.request(method, url, **kw)


async def test_original_bytes_and_safe_headers_are_forwarded() -> None:
    raw = b'{ "model" : "m",  "messages": [{"role": "user", "content": "hi"}], "extra": {"k": 1} }'
    async with StubWorker("m", "echo") as stub, gateway([stub.url]) as (url, _):
        resp = await call("POST", f"{url}/v1/chat/completions", content=raw, headers={
            "content-type": "application/json", "authorization": "Bearer secret", "cookie": "a=b",
            "x-request-id": "abc", "x-custom": "no"})
        assert resp.status_code == 200
        echo = resp.json()
        assert echo["path"] == "/v1/chat/completions"
        assert echo["body"].encode() == raw
        assert echo["headers"]["x-request-id"] == "abc" and resp.headers["x-request-id"] == "abc"
        for header in ("authorization", "cookie", "x-custom"):
            assert header not in echo["headers"]


async def test_request_id_is_added_when_absent_and_returned() -> None:
    async with StubWorker("m", "echo") as stub, gateway([stub.url]) as (url, _):
        resp = await call("POST", f"{url}/v1/completions", json={"model": "m", "prompt": "x"})
        assert resp.status_code == 200
        assert resp.headers["x-request-id"] == resp.json()["headers"]["x-request-id"]
        assert len(resp.headers["x-request-id"]) >= 16


async def test_absent_model_gets_the_default_of_the_endpoint_type_injected() -> None:
    async with StubWorker("chat", "echo") as llm, StubWorker("emb", "echo", "embedding") as emb:
        async with gateway([emb.url, llm.url]) as (url, _):
            resp = await call("POST", f"{url}/v1/embeddings", json={"input": "a"})
            assert json.loads(resp.json()["body"]) == {"input": "a", "model": "emb"}
            resp = await call("POST", f"{url}/v1/chat/completions", json={"messages": []})
            assert json.loads(resp.json()["body"])["model"] == "chat"
            assert emb.hits == 1 and llm.hits == 1


async def test_configured_default_model_is_used() -> None:
    async with StubWorker("a", "echo") as a, StubWorker("b", "echo") as b:
        async with gateway([a.url, b.url], default_chat_model="b") as (url, _):
            resp = await call("POST", f"{url}/v1/chat/completions", json={"messages": []})
            assert json.loads(resp.json()["body"])["model"] == "b" and b.hits == 1


async def test_bad_bodies_are_400_in_openai_shape_and_never_forwarded() -> None:
    async with StubWorker("m", "echo") as stub, gateway([stub.url]) as (url, _):
        endpoint = f"{url}/v1/chat/completions"
        resp = await call("POST", endpoint, content=b'{"model": "m", ', headers={"x-request-id": "r1"})
        assert resp.status_code == 400 and resp.headers["x-request-id"] == "r1"
        assert resp.json()["error"]["code"] == "invalid_json"
        assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
        resp = await call("POST", endpoint, json=[1, 2])
        assert resp.status_code == 400 and "JSON object" in resp.json()["error"]["message"]
        resp = await call("POST", endpoint, json={"model": 42, "messages": []})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "model"
        assert stub.hits == 0


async def test_unknown_model_is_404_model_not_found() -> None:
    async with StubWorker("m", "echo") as stub, gateway([stub.url]) as (url, _):
        resp = await call("POST", f"{url}/v1/chat/completions", json={"model": "nope", "messages": []})
        assert resp.status_code == 404
        err = resp.json()["error"]
        assert err["code"] == "model_not_found" and err["param"] == "model"
        assert "nope" in err["message"] and "m" in err["message"]


async def test_body_over_the_limit_is_413() -> None:
    async with StubWorker("m", "echo") as stub, gateway([stub.url], max_body_bytes=1000) as (url, _):
        big = {"model": "m", "messages": [{"role": "user", "content": "x" * 2000}]}
        resp = await call("POST", f"{url}/v1/chat/completions", json=big)
        assert resp.status_code == 413 and resp.json()["error"]["code"] == "payload_too_large"

        async def chunks():  # no content-length: the limit must still hold
            yield b'{"model": "m", "pad": "'
            for _ in range(20):
                yield b"y" * 100
            yield b'"}'

        resp = await call("POST", f"{url}/v1/chat/completions", content=chunks())
        assert resp.status_code == 413
        assert stub.hits == 0


async def test_unknown_route_is_404_in_openai_shape() -> None:
    async with gateway([]) as (url, _):
        resp = await call("GET", f"{url}/v1/nothing")
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
        resp = await call("POST", f"{url}/v1/chat/completions", json={"messages": []})
        assert resp.status_code == 503


async def test_models_union_has_one_card_per_model_with_type_and_capabilities() -> None:
    async with StubWorker("chat") as a, StubWorker("chat") as b, StubWorker("emb", model_type="embedding") as c:
        async with StubWorker("gone") as d:
            pass
        async with gateway([a.url, b.url, c.url, d.url]) as (url, _):
            body = (await call("GET", f"{url}/v1/models")).json()
            assert body["object"] == "list"
            cards = {card["id"]: card for card in body["data"]}
            assert list(cards) == ["chat", "emb"]
            assert cards["chat"]["type"] == "llm" and cards["chat"]["capabilities"] == ["chat", "completions"]
            assert cards["emb"]["capabilities"] == ["embeddings"]
            assert all(card["object"] == "model" for card in body["data"])


async def test_services_lists_every_replica_and_health_counts() -> None:
    async with StubWorker("chat") as a, StubWorker("emb", model_type="embedding") as b:
        async with StubWorker("gone") as dead:
            pass
        async with gateway([a.url, b.url, dead.url]) as (url, _):
            rows = (await call("GET", f"{url}/services")).json()["data"]
            assert [r["url"] for r in rows] == [a.url, b.url, dead.url]
            assert rows[0]["healthy"] and rows[0]["model"] == "chat" and rows[0]["in_flight"] == 0
            assert rows[0]["last_seen"] and rows[0]["latency_ms"] is not None and rows[0]["reason"] is None
            assert rows[1]["type"] == "embedding"
            assert not rows[2]["healthy"] and rows[2]["reason"].startswith("unreachable")
            assert rows[2]["last_seen"] is None
            health = (await call("GET", f"{url}/health")).json()
            assert health["status"] == "ok" and health["healthy_replicas"] == 2 and health["replicas"] == 3
            assert health["models"] == ["chat", "emb"]
