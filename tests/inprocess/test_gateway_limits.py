"""Per-key rate limits and per-request caps: refused requests get OpenAI's answers and never reach a
worker (the worker's own request counter says so)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.helpers.auth import (
    ADMIN,
    ADMIN_KEY,
    PROMPT,
    authed_worker,
    bearer,
    create_key,
    keyed_gateway,
    scrape,
    worker_requests,
)

CHAT = "/v1/chat/completions"
RATE_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")
TOKEN_HEADERS = ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    async with AsyncExitStack() as stack:
        chat = await stack.enter_async_context(authed_worker("chat"))
        emb = await stack.enter_async_context(authed_worker("emb", "embedding"))
        url, state, _ = await stack.enter_async_context(
            keyed_gateway(tmp_path, [chat, emb], max_tokens_limit=50, max_embedding_inputs=3))
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=15, trust_env=False))
        yield {"url": url, "state": state, "client": client, "chat": chat, "emb": emb}


async def test_a_burst_over_the_rpm_limit_gets_429s_that_never_reach_the_worker(stack: dict[str, Any]) -> None:
    key = await create_key(stack["url"], name="burst", rpm=3)
    body = {"model": "chat", "messages": PROMPT, "max_tokens": 3}
    burst = await asyncio.gather(*(stack["client"].post(CHAT, json=body, headers=bearer(key["key"]))
                                   for _ in range(8)))
    ok = [r for r in burst if r.status_code == 200]
    refused = [r for r in burst if r.status_code == 429]
    # The bucket refills one request per 20 s: a whole burst finishes long before that.
    assert len(ok) == 3 and len(refused) == 5
    for resp in refused:
        err = resp.json()["error"]
        assert (err["type"], err["code"]) == ("rate_limit_error", "rate_limit_exceeded")
        assert "requests per minute" in err["message"]
        assert int(resp.headers["retry-after"]) >= 1
        assert resp.headers["x-ratelimit-limit-requests"] == "3"
        assert resp.headers["x-ratelimit-remaining-requests"] == "0"
        assert resp.headers["x-ratelimit-reset-requests"].endswith("s")
    assert sorted(r.headers["x-ratelimit-remaining-requests"] for r in ok) == ["0", "1", "2"]
    assert all(h in r.headers for r in burst for h in RATE_HEADERS)
    assert not any(h in r.headers for r in burst for h in TOKEN_HEADERS)  # this key has no tpm
    assert await worker_requests(stack["chat"], CHAT) == 3

    # The OpenAI SDK sees its own RateLimitError, and the gateway counts the refusals per model.
    async with openai.AsyncOpenAI(base_url=f"{stack['url']}/v1", api_key=key["key"], max_retries=0) as sdk:
        with pytest.raises(openai.RateLimitError) as raised:
            await sdk.chat.completions.create(model="chat", messages=PROMPT)
        assert raised.value.code == "rate_limit_exceeded"
    metrics = await scrape(stack["url"], ADMIN)
    assert metrics[("gateway_rate_limited_total", (("model", "chat"),))] == 6
    assert await worker_requests(stack["chat"], CHAT) == 3

    # Other keys (and keys without limits) are not affected.
    free = await create_key(stack["url"], name="free")
    resp = await stack["client"].post(CHAT, json=body, headers=bearer(free["key"]))
    assert resp.status_code == 200 and not any(h.startswith("x-ratelimit") for h in resp.headers)


async def test_a_key_out_of_tokens_is_refused_until_its_budget_refills(stack: dict[str, Any]) -> None:
    key = await create_key(stack["url"], name="thrifty", tpm=12)
    client = stack["client"]
    # Streamed without include_usage: the gateway still learns the usage and charges it.
    async with client.stream("POST", CHAT, headers=bearer(key["key"]),
                             json={"model": "chat", "messages": PROMPT, "stream": True}) as resp:
        assert resp.status_code == 200
        assert resp.headers["x-ratelimit-limit-tokens"] == "12"
        assert resp.headers["x-ratelimit-remaining-tokens"] == "12"
        text = (await resp.aread()).decode()
    assert '"usage"' not in text
    spent_on_worker = await worker_requests(stack["chat"], CHAT)
    refused = await client.post(CHAT, json={"model": "chat", "messages": PROMPT}, headers=bearer(key["key"]))
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "tokens per minute" in refused.json()["error"]["message"]
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert int(refused.headers["retry-after"]) >= 1
    assert await worker_requests(stack["chat"], CHAT) == spent_on_worker


async def test_max_tokens_above_the_cap_is_400_naming_the_param(stack: dict[str, Any]) -> None:
    client = stack["client"]
    key = (await create_key(stack["url"], name="caps"))["key"]
    for path, param, extra in ((CHAT, "max_tokens", {"messages": PROMPT}),
                               (CHAT, "max_completion_tokens", {"messages": PROMPT}),
                               ("/v1/completions", "max_tokens", {"prompt": "one two"})):
        resp = await client.post(path, json={"model": "chat", param: 51, **extra}, headers=bearer(key))
        assert resp.status_code == 400, resp.text
        err = resp.json()["error"]
        assert err["param"] == param and err["code"] == "max_tokens_too_large" and "50" in err["message"]
    assert await worker_requests(stack["chat"], CHAT) == 0
    resp = await client.post(CHAT, json={"model": "chat", "max_tokens": 50, "messages": PROMPT}, headers=bearer(key))
    assert resp.status_code == 200


async def test_the_cap_bounds_a_request_that_sets_no_max_tokens(tmp_path: Path) -> None:
    async with authed_worker("chat") as chat, keyed_gateway(tmp_path, [chat], max_tokens_limit=2) as (url, _, _):
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=ADMIN_KEY, max_retries=0) as sdk:
            capped = await sdk.chat.completions.create(model="chat", messages=PROMPT)
            assert capped.usage.completion_tokens == 2 and capped.choices[0].finish_reason == "length"
            stream = await sdk.completions.create(model="chat", prompt="one two three four", stream=True)
            pieces = [c async for c in stream]
            assert sum(1 for c in pieces if c.choices and c.choices[0].text) == 2
            shorter = await sdk.chat.completions.create(model="chat", messages=PROMPT, max_tokens=1)
            assert shorter.usage.completion_tokens == 1


async def test_too_many_embedding_inputs_is_400(stack: dict[str, Any]) -> None:
    key = (await create_key(stack["url"], name="emb"))["key"]
    async with openai.AsyncOpenAI(base_url=f"{stack['url']}/v1", api_key=key, max_retries=0) as sdk:
        with pytest.raises(openai.BadRequestError) as raised:
            await sdk.embeddings.create(model="emb", input=["a", "b", "c", "d"])
        assert raised.value.body["param"] == "input" and raised.value.code == "too_many_inputs"
        assert await worker_requests(stack["emb"], "/v1/embeddings") == 0
        done = await sdk.embeddings.create(model="emb", input=["a", "b", "c"])
        assert len(done.data) == 3


async def test_the_total_upstream_deadline_cuts_a_slow_answer(tmp_path: Path) -> None:
    async with authed_worker("slow", fake_token_delay_s=0.5) as slow, \
            keyed_gateway(tmp_path, [slow], upstream_deadline_s=0.3) as (url, _, _):
        key = (await create_key(url, name="patient"))["key"]
        body = {"model": "slow", "messages": PROMPT, "max_tokens": 20}
        async with httpx.AsyncClient(base_url=url, timeout=30, trust_env=False) as client:
            resp = await client.post(CHAT, json=body, headers=bearer(key))
            assert resp.status_code == 504 and resp.json()["error"]["code"] == "upstream_timeout"
            resp = await client.post(CHAT, json={**body, "stream": True}, headers=bearer(key))
            assert resp.status_code == 200
            last = [e for e in resp.text.split("\n\n") if e][-1]
            assert json.loads(last.removeprefix("data: "))["error"]["code"] == "upstream_timeout"
