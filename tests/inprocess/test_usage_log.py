"""The usage log: one line per request with the worker's own token counts, streamed answers included;
the usage chunk the gateway asked for on a client's behalf is taken out again; /usage sums it up;
rotation keeps every line."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.helpers.auth import ADMIN, PROMPT, SERVICE, authed_worker, bearer, create_key, keyed_gateway, scrape

CHAT, COMPLETIONS, EMBEDDINGS = "/v1/chat/completions", "/v1/completions", "/v1/embeddings"


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    async with AsyncExitStack() as stack:
        chat = await stack.enter_async_context(authed_worker("chat"))
        emb = await stack.enter_async_context(authed_worker("emb", "embedding"))
        url, state, _ = await stack.enter_async_context(keyed_gateway(tmp_path, [chat, emb]))
        key = await create_key(url, name="reporter")
        client = await stack.enter_async_context(
            httpx.AsyncClient(base_url=url, timeout=15, trust_env=False, headers=bearer(key["key"])))
        direct = await stack.enter_async_context(httpx.AsyncClient(timeout=15, trust_env=False, headers=SERVICE))
        sdk = await stack.enter_async_context(openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key["key"],
                                                                 max_retries=0))
        yield {"url": url, "state": state, "client": client, "direct": direct, "sdk": sdk, "key": key,
               "chat": chat, "emb": emb, "home": tmp_path}


def events(text: str) -> list[Any]:
    return [e.removeprefix("data: ") for e in text.split("\n\n") if e]


def without_ids(text: str) -> str:
    """The stream's bytes with the per-request ``id`` and ``created`` values blanked out."""
    return re.sub(r'"created":\d+', '"created":0', re.sub(r'"id":"[^"]*"', '"id":""', text))


async def worker_usage(direct: httpx.AsyncClient, url: str, path: str, body: dict[str, Any]) -> dict[str, int]:
    """What the worker reports for ``body``, asked directly with include_usage on."""
    resp = await direct.post(f"{url}{path}", json={**body, "stream": True, "stream_options": {"include_usage": True}})
    return json.loads(events(resp.text)[-2])["usage"]


async def log_lines(state: Any, home: Path) -> dict[str, dict[str, Any]]:
    await state.usage.flush()
    lines = [json.loads(line) for line in (home / "usage.log").read_text().splitlines()]
    return {line["request_id"]: line for line in lines if line.get("request_id")}


def tokens(line: dict[str, Any]) -> dict[str, int]:
    return {k: line[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def usage_dict(usage: Any) -> dict[str, int]:
    return {k: getattr(usage, k) if not isinstance(usage, dict) else usage[k]
            for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


async def test_every_request_is_logged_with_the_workers_token_counts(stack: dict[str, Any]) -> None:
    client, sdk, direct = stack["client"], stack["sdk"], stack["direct"]
    chat_body = {"model": "chat", "messages": PROMPT, "temperature": 0}
    expected: dict[str, dict[str, Any]] = {}

    # 1. Chat streamed without include_usage: the client gets exactly the worker's normal stream.
    streamed = await client.post(CHAT, json={**chat_body, "stream": True}, headers={"x-request-id": "r-stream"})
    plain = await direct.post(f"{stack['chat']}{CHAT}", json={**chat_body, "stream": True})
    assert '"usage"' not in streamed.text and streamed.text.endswith("data: [DONE]\n\n")
    assert without_ids(streamed.text) == without_ids(plain.text)
    expected["r-stream"] = {"usage": await worker_usage(direct, stack["chat"], CHAT, chat_body), "stream": True}

    # 2. Chat streamed with include_usage (the SDK): passed through, usage chunk and all.
    chunks = [c async for c in await sdk.chat.completions.create(
        **chat_body, stream=True, stream_options={"include_usage": True}, extra_headers={"x-request-id": "r-sdk"})]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    expected["r-sdk"] = {"usage": usage_dict(chunks[-1].usage), "stream": True}

    # 3-5. Non-streamed chat, completions (plain and streamed) and embeddings.
    answer = await sdk.chat.completions.create(**chat_body, extra_headers={"x-request-id": "r-chat"})
    expected["r-chat"] = {"usage": usage_dict(answer.usage), "stream": False}
    text = await sdk.completions.create(model="chat", prompt="one two three", max_tokens=5,
                                        extra_headers={"x-request-id": "r-text"})
    expected["r-text"] = {"usage": usage_dict(text.usage), "stream": False}
    text_body = {"model": "chat", "prompt": "four five", "max_tokens": 5}
    resp = await client.post(COMPLETIONS, json={**text_body, "stream": True}, headers={"x-request-id": "r-text-s"})
    assert '"usage"' not in resp.text
    expected["r-text-s"] = {"usage": await worker_usage(direct, stack["chat"], COMPLETIONS, text_body),
                            "stream": True}
    vectors = await client.post(EMBEDDINGS, json={"model": "emb", "input": ["a b", "c"]},
                                headers={"x-request-id": "r-emb"})
    reported = vectors.json()["usage"]
    expected["r-emb"] = {"usage": {**reported, "completion_tokens": reported.get("completion_tokens")},
                         "stream": False}

    # 6. Errors: one from the worker (bad temperature), one from the gateway (no such model).
    bad = await client.post(CHAT, json={**chat_body, "temperature": 9}, headers={"x-request-id": "r-bad"})
    assert bad.status_code == 400
    missing = await client.post(CHAT, json={**chat_body, "model": "nope"}, headers={"x-request-id": "r-404"})
    assert missing.status_code == 404

    lines = await log_lines(stack["state"], stack["home"])
    for request_id, want in expected.items():
        line = lines[request_id]
        assert tokens(line) == want["usage"], request_id
        assert line["status"] == 200 and line["stream"] is want["stream"] and line["key_id"] == stack["key"]["id"]
        assert line["replica"] in (stack["chat"], stack["emb"]) and line["client_ip"] == "127.0.0.1"
        assert line["latency_ms"] > 0
        assert (line["ttft_ms"] is not None) is want["stream"], request_id
    assert lines["r-emb"]["endpoint"] == EMBEDDINGS and lines["r-emb"]["model"] == "emb"
    assert lines["r-text-s"]["endpoint"] == COMPLETIONS
    assert lines["r-bad"]["status"] == 400 and lines["r-bad"]["replica"] == stack["chat"]
    assert lines["r-bad"]["error"] == "invalid_value" and lines["r-bad"]["total_tokens"] is None
    assert lines["r-404"]["status"] == 404 and lines["r-404"]["error"] == "model_not_found"
    assert lines["r-404"]["replica"] is None and lines["r-404"]["model"] == "nope"
    log_text = (stack["home"] / "usage.log").read_text()
    assert "quick brown" not in log_text and "four five" not in log_text  # no content unless asked for

    # The gateway's metrics agree with the log.
    metrics = await scrape(stack["url"], SERVICE)
    chat_lines = [line for line in lines.values() if line["model"] == "chat" and line["status"] == 200]
    assert metrics[("gateway_prompt_tokens_total", (("model", "chat"),))] == sum(
        line["prompt_tokens"] for line in chat_lines)
    assert metrics[("gateway_completion_tokens_total", (("model", "chat"),))] == sum(
        line["completion_tokens"] for line in chat_lines)
    assert metrics[("gateway_time_to_first_token_seconds_count", (("model", "chat"),))] == 3

    # /usage sums the same lines, by key and by model, over a window.
    summary = (await client.get("/usage", headers=ADMIN)).json()
    assert summary["requests"] == len(lines) == 8 and summary["errors"] == 2
    assert summary["total_tokens"] == sum(line["total_tokens"] or 0 for line in lines.values())
    assert summary["by_key"][stack["key"]["id"]]["requests"] == 8
    assert summary["by_model"]["chat"]["requests"] == 6 and summary["by_model"]["emb"]["requests"] == 1
    assert summary["by_model"]["chat"]["prompt_tokens"] == sum(line["prompt_tokens"] for line in chat_lines)
    assert summary["by_model"]["nope"]["errors"] == 1
    first = min(line["time"] for line in lines.values())
    later = (await client.get("/usage", params={"since": "2999-01-01T00:00:00Z"}, headers=ADMIN)).json()
    assert later["requests"] == 0 and later["by_key"] == {}
    window = (await client.get("/usage", params={"since": first, "until": "4102444800"}, headers=ADMIN)).json()
    assert window["requests"] == 8
    before = (await client.get("/usage", params={"until": first}, headers=ADMIN)).json()
    assert before["requests"] == 0
    bad_window = await client.get("/usage", params={"since": "yesterday"}, headers=ADMIN)
    assert bad_window.status_code == 400 and bad_window.json()["error"]["param"] == "since"


async def test_content_is_logged_only_when_asked(tmp_path: Path) -> None:
    async with (authed_worker("chat") as chat,
                keyed_gateway(tmp_path, [chat], usage_log_content=True) as (url, state, _)):
        key = (await create_key(url, name="talker"))["key"]
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) as sdk:
            answer = await sdk.chat.completions.create(model="chat", messages=PROMPT, temperature=0,
                                                       extra_headers={"x-request-id": "plain"})
            stream = await sdk.chat.completions.create(model="chat", messages=PROMPT, temperature=0, stream=True,
                                                       extra_headers={"x-request-id": "streamed"})
            streamed_text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        lines = await log_lines(state, tmp_path)
    assert lines["plain"]["prompt"] == PROMPT and lines["plain"]["completion"] == answer.choices[0].message.content
    assert lines["streamed"]["prompt"] == PROMPT and lines["streamed"]["completion"] == streamed_text
    assert lines["streamed"]["completion_tokens"] > 0


def logged_ids(home: Path) -> tuple[int, list[str]]:
    """How many log files there are (current and rotated), and the request ids in all of them."""
    files = sorted(home.glob("usage.log*"))
    assert (home / "usage.log.1").exists()
    ids = [json.loads(line).get("request_id") for f in files for line in f.read_text().splitlines()]
    return len(files), [i for i in ids if i]


async def test_rotation_keeps_every_line_and_usage_reads_the_rotated_files(tmp_path: Path) -> None:
    sent = 15
    async with authed_worker("chat") as chat, keyed_gateway(tmp_path, [chat], usage_log_max_bytes=1024,
                                                     usage_log_backup_count=50) as (url, state, _):
        key = (await create_key(url, name="chatty"))["key"]
        async with httpx.AsyncClient(base_url=url, timeout=15, trust_env=False, headers=bearer(key)) as client:
            for i in range(sent):
                resp = await client.post(CHAT, json={"model": "chat", "messages": PROMPT},
                                         headers={"x-request-id": f"n{i}"})
                assert resp.status_code == 200
            summary = (await client.get("/usage", headers=ADMIN)).json()
        await state.usage.flush()
    files, ids = logged_ids(tmp_path)
    assert files > 2 and sorted(ids) == sorted(f"n{i}" for i in range(sent))
    assert summary["requests"] == sent and summary["by_model"]["chat"]["requests"] == sent
