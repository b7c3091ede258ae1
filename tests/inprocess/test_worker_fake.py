"""The worker's HTTP layer with the fake engine: OpenAI shapes, streaming, errors, admission."""

from __future__ import annotations

import asyncio

import pytest

from model_service.vectors import from_base64
from tests.helpers.http import assert_error, sse_events

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "hello big world"}]


async def test_health_is_503_while_loading_then_200(worker_client):
    async with worker_client(wait_ready=False, fake_load_delay_s=0.3) as client:
        resp = await client.get("/health")
        assert_error(resp, 503, "model_loading")
        assert resp.headers["retry-after"] == "1"
        chat = await client.post(CHAT, json={"messages": HELLO})
        assert_error(chat, 503, "model_loading")
        assert "retry-after" in chat.headers
        for _ in range(100):
            resp = await client.get("/health")
            if resp.status_code == 200:
                break
            await asyncio.sleep(0.02)
        body = resp.json()
        assert resp.status_code == 200
        assert body["status"] == "ok" and body["model"] == "fake-model" and body["type"] == "llm"
        assert body["engine"] == "fake" and body["max_model_len"] == 2048


async def test_health_reports_a_failed_load(worker_client):
    async with worker_client(wait_ready=False, fake_load_error="weights are corrupt") as client:
        for _ in range(100):
            resp = await client.get("/health")
            if resp.json()["error"]["code"] != "model_loading":
                break
            await asyncio.sleep(0.01)
        err = assert_error(resp, 503, "model_load_failed")
        assert "weights are corrupt" in err["message"]
        assert_error(await client.post(CHAT, json={"messages": HELLO}), 503, "model_load_failed")


async def test_models_list_and_gpu_stats(worker_client):
    async with worker_client(model_type="embedding", model_name="emb") as client:
        models = (await client.get("/v1/models")).json()
        assert models["object"] == "list"
        (card,) = models["data"]
        assert card["id"] == "emb" and card["object"] == "model"
        assert card["type"] == "embedding" and card["capabilities"] == ["embeddings"]
        stats = await client.get("/gpu-stats")
        assert stats.status_code == 200
        body = stats.json()
        assert isinstance(body["available"], bool)
        assert body["host"]["cpu_count"] >= 1
        if not body["available"]:
            assert body["reason"]


async def test_chat_non_streaming_shape(worker_client):
    async with worker_client() as client:
        resp = await client.post(CHAT, json={"model": "fake-model", "messages": HELLO, "temperature": 0})
        assert resp.status_code == 200
        body = resp.json()
        assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
        assert body["model"] == "fake-model"
        (choice,) = body["choices"]
        assert choice["message"] == {"role": "assistant", "content": "hello big world", "refusal": None}
        assert choice["finish_reason"] == "stop" and choice["index"] == 0
        usage = body["usage"]
        assert usage["completion_tokens"] == 4  # three words and the end-of-sequence token
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_chat_max_tokens_gives_length(worker_client):
    async with worker_client() as client:
        for field in ("max_tokens", "max_completion_tokens"):
            body = (await client.post(CHAT, json={"messages": HELLO, "temperature": 0, field: 2})).json()
            assert body["choices"][0]["message"]["content"] == "hello big"
            assert body["choices"][0]["finish_reason"] == "length"
            assert body["usage"]["completion_tokens"] == 2


async def test_chat_stop_string_is_not_included(worker_client):
    async with worker_client() as client:
        body = (await client.post(CHAT, json={"messages": HELLO, "temperature": 0, "stop": ["g w", "zzz"]})).json()
        assert body["choices"][0]["message"]["content"] == "hello bi"
        assert body["choices"][0]["finish_reason"] == "stop"


async def test_chat_stream_shapes_with_usage(worker_client):
    async with worker_client() as client:
        resp = await client.post(CHAT, json={"messages": HELLO, "temperature": 0, "stream": True,
                                             "stream_options": {"include_usage": True}})
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = sse_events(resp.text)
        assert events[-1] == "[DONE]"
        chunks = events[:-1]
        assert len({c["id"] for c in chunks}) == 1 and len({c["created"] for c in chunks}) == 1
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        first, *content, last, usage = chunks
        assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert "".join(c["choices"][0]["delta"]["content"] for c in content) == "hello big world"
        assert all(set(c["choices"][0]["delta"]) == {"content"} for c in content)
        assert last["choices"][0]["delta"] == {} and last["choices"][0]["finish_reason"] == "stop"
        assert all(c["usage"] is None for c in chunks[:-1])
        assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 4


async def test_chat_stream_without_usage_has_no_usage_field(worker_client):
    async with worker_client() as client:
        resp = await client.post(CHAT, json={"messages": HELLO, "stream": True, "max_tokens": 1})
        chunks = sse_events(resp.text)[:-1]
        assert all("usage" not in c for c in chunks)
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_chat_n2_stream_and_non_stream(worker_client):
    async with worker_client() as client:
        body = (await client.post(CHAT, json={"messages": HELLO, "n": 2, "temperature": 0})).json()
        assert [c["index"] for c in body["choices"]] == [0, 1]
        assert {c["message"]["content"] for c in body["choices"]} == {"hello big world"}
        assert body["usage"]["completion_tokens"] == 8
        resp = await client.post(CHAT, json={"messages": HELLO, "n": 2, "temperature": 0, "stream": True})
        chunks = sse_events(resp.text)[:-1]
        for index in (0, 1):
            mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == index]
            assert mine[0]["delta"]["role"] == "assistant"
            assert "".join(m["delta"].get("content", "") for m in mine) == "hello big world"
            assert mine[-1]["finish_reason"] == "stop"


async def test_seed_makes_sampling_reproducible(worker_client):
    async with worker_client() as client:
        req = {"messages": [{"role": "user", "content": "a b c d e f g h"}], "temperature": 1, "seed": 7}
        first = (await client.post(CHAT, json=req)).json()["choices"][0]["message"]["content"]
        again = (await client.post(CHAT, json=req)).json()["choices"][0]["message"]["content"]
        assert first == again and sorted(first.split()) == list("abcdefgh")


async def test_chat_logprobs(worker_client):
    async with worker_client() as client:
        body = (await client.post(CHAT, json={"messages": HELLO, "temperature": 0, "logprobs": True,
                                              "top_logprobs": 2})).json()
        content = body["choices"][0]["logprobs"]["content"]
        assert [c["token"] for c in content] == ["hello", " big", " world"]
        assert all(len(c["top_logprobs"]) == 2 and c["bytes"] for c in content)


async def test_completions_echo_n_and_lists(worker_client):
    async with worker_client() as client:
        resp = await client.post("/v1/completions", json={"prompt": ["one two", "three"], "n": 2, "echo": True,
                                                          "temperature": 0, "max_tokens": 5})
        body = resp.json()
        assert body["object"] == "text_completion"
        texts = [c["text"] for c in body["choices"]]
        assert texts == ["one two one two", "one two one two", "three three", "three three"]
        assert [c["finish_reason"] for c in body["choices"]] == ["stop"] * 4
        resp = await client.post("/v1/completions", json={"prompt": "one two three", "max_tokens": 2,
                                                          "temperature": 0, "stream": True,
                                                          "stream_options": {"include_usage": True}})
        events = sse_events(resp.text)
        assert events[-1] == "[DONE]"
        chunks = events[:-1]
        assert all(c["object"] == "text_completion" for c in chunks)
        assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == " one two"
        assert chunks[-2]["choices"][0]["finish_reason"] == "length"
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2


async def test_embeddings_float_base64_and_dimensions(worker_client):
    async with worker_client(model_type="embedding", model_name="emb") as client:
        body = (await client.post("/v1/embeddings", json={"input": ["a cat", "a dog"]})).json()
        assert body["object"] == "list" and body["model"] == "emb"
        vectors = [d["embedding"] for d in body["data"]]
        assert [d["index"] for d in body["data"]] == [0, 1]
        assert len(vectors[0]) == 384
        assert abs(sum(v * v for v in vectors[0]) - 1) < 1e-6
        assert body["usage"]["prompt_tokens"] == 4
        b64 = (await client.post("/v1/embeddings", json={"input": "a cat", "encoding_format": "base64"})).json()
        assert from_base64(b64["data"][0]["embedding"]) == pytest.approx(vectors[0], abs=1e-6)
        short = (await client.post("/v1/embeddings", json={"input": "a cat", "dimensions": 8})).json()
        vec = short["data"][0]["embedding"]
        assert len(vec) == 8 and abs(sum(v * v for v in vec) - 1) < 1e-6
        too_big = await client.post("/v1/embeddings", json={"input": "a cat", "dimensions": 385})
        assert_error(too_big, 400, param="dimensions")


async def test_wrong_endpoint_for_model_type(worker_client):
    async with worker_client(model_type="embedding", model_name="emb") as client:
        err = assert_error(await client.post(CHAT, json={"messages": HELLO}), 400, "unsupported_endpoint")
        assert "embedding" in err["message"]
    async with worker_client() as client:
        err = assert_error(await client.post("/v1/embeddings", json={"input": "x"}), 400, "unsupported_endpoint")
        assert "llm" in err["message"]


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"model": "other", "messages": HELLO}, 404, "model_not_found", "model"),
        ({"messages": "hi"}, 400, "invalid_value", "messages"),
        ({"messages": HELLO, "temperature": "hot"}, 400, "invalid_value", "temperature"),
        ({"messages": HELLO, "presence_penalty": 2.5}, 400, "invalid_value", "presence_penalty"),
        ({"messages": HELLO, "frequency_penalty": -3}, 400, "invalid_value", "frequency_penalty"),
        ({"messages": HELLO, "n": 0}, 400, "invalid_value", "n"),
        ({"messages": HELLO, "max_tokens": 0}, 400, "invalid_value", "max_tokens"),
        ({}, 400, None, "messages"),
        ({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]},
         400, "images_not_supported", "messages"),
        ({"messages": [{"role": "user", "content": "x " * 3000}]}, 400, "context_length_exceeded", "messages"),
    ],
)
async def test_chat_errors(worker_client, body, status, code, param):
    async with worker_client() as client:
        assert_error(await client.post(CHAT, json=body), status, code, param)


async def test_malformed_json_and_unknown_routes(worker_client):
    async with worker_client() as client:
        resp = await client.post(CHAT, content=b'{"messages": [', headers={"content-type": "application/json"})
        assert_error(resp, 400, "invalid_json")
        assert_error(await client.get("/v1/nothing"), 404)


async def test_body_too_large_is_413(worker_client):
    async with worker_client(max_body_bytes=1000) as client:
        resp = await client.post(CHAT, json={"messages": [{"role": "user", "content": "x" * 2000}]})
        assert_error(resp, 413, "payload_too_large")


async def test_full_queue_answers_429_at_once(worker_client):
    async with worker_client(max_concurrency=1, max_queue=0, fake_token_delay_s=0.05) as client:
        worker = client.app.state.worker
        slow = asyncio.create_task(client.post(CHAT, json={"messages": HELLO, "max_tokens": 20}))
        for _ in range(200):
            if worker.admission.running:
                break
            await asyncio.sleep(0.005)
        resp = await client.post(CHAT, json={"messages": HELLO})
        err = assert_error(resp, 429, "overloaded")
        assert resp.headers["retry-after"] == "1" and "capacity" in err["message"]
        assert (await slow).status_code == 200


async def test_queue_waits_when_there_is_room(worker_client):
    async with worker_client(max_concurrency=1, max_queue=4, fake_token_delay_s=0.01) as client:
        answers = await asyncio.gather(*[client.post(CHAT, json={"messages": HELLO}) for _ in range(4)])
        assert [a.status_code for a in answers] == [200] * 4


async def test_metrics_count_requests_tokens_and_state(worker_client):
    async with worker_client() as client:
        await client.post(CHAT, json={"messages": HELLO, "temperature": 0})
        text = (await client.get("/metrics")).text
        labels = 'endpoint="/v1/chat/completions",model="fake-model",status="200"'
        assert f"worker_requests_total{{{labels}}} 1.0" in text
        assert "worker_request_duration_seconds_bucket" in text
        assert 'worker_completion_tokens_total{model="fake-model"} 4.0' in text
        assert 'worker_model_loaded{model="fake-model"} 1.0' in text
        assert 'worker_queue_depth{model="fake-model"} 0.0' in text
        assert 'worker_in_flight_requests{model="fake-model"} 0.0' in text


async def test_apps_have_separate_metrics(worker_client):
    async with worker_client() as one, worker_client() as two:
        await one.post(CHAT, json={"messages": HELLO})
        assert "/v1/chat/completions" not in (await two.get("/metrics")).text
