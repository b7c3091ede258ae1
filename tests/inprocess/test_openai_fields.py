"""Every request field of OpenAI's chat completions, completions and embeddings APIs is honoured or
refused with a 400 ``unsupported_parameter`` naming it: none is silently dropped.

The field lists below are written from OpenAI's API reference (one example value each), not from this
server's models, so a field the server forgets to declare shows up as an unknown extra (dropped) and
fails ``test_every_spec_field_is_declared``. The walk runs against fake-engine workers and through the
gateway over real HTTP; the effects a fake "model" can show are checked here, the sampling knobs'
effects on a real model in ``test_sampling_real.py``.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from common.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from model_service.app import create_app as create_worker
from model_service.settings import WorkerSettings
from tests.helpers.polling import eventually
from tests.helpers.servers import gateway, serve

pytestmark = pytest.mark.asyncio(loop_scope="module")

WORDS = "alpha beta gamma delta epsilon zeta"
CHAT = {"messages": [{"role": "user", "content": WORDS}], "temperature": 0}
COMPLETION = {"prompt": WORDS, "temperature": 0}
EMBEDDING = {"input": WORDS}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}

HONOURED, REFUSED = "honoured", "refused"

# OpenAI's chat completions request body: field -> (example value, what this server does with it).
CHAT_FIELDS: dict[str, tuple[Any, str]] = {
    "messages": ([{"role": "user", "content": WORDS}], HONOURED),
    "model": ("fake-llm", HONOURED),
    "audio": ({"voice": "alloy", "format": "mp3"}, REFUSED),
    "frequency_penalty": (0.5, HONOURED),
    "function_call": ("auto", REFUSED),
    "functions": ([TOOL["function"]], REFUSED),
    "logit_bias": ({"50256": -100}, HONOURED),
    "logprobs": (True, HONOURED),
    "max_completion_tokens": (2, HONOURED),
    "max_tokens": (2, HONOURED),
    "metadata": ({"project": "fields-test"}, HONOURED),
    "modalities": (["text", "audio"], REFUSED),
    "n": (2, HONOURED),
    "parallel_tool_calls": (False, HONOURED),
    "prediction": ({"type": "content", "content": "alpha"}, REFUSED),
    "presence_penalty": (0.5, HONOURED),
    "prompt_cache_key": ("cache-1", HONOURED),
    "reasoning_effort": ("low", REFUSED),
    "response_format": ({"type": "json_object"}, HONOURED),
    "safety_identifier": ("user-hash-1", HONOURED),
    "seed": (7, HONOURED),
    "service_tier": ("flex", REFUSED),
    "stop": ([" gamma"], HONOURED),
    "store": (True, REFUSED),
    "stream": (True, HONOURED),
    "stream_options": ({"include_usage": True}, HONOURED),
    "temperature": (1.0, HONOURED),
    "tool_choice": ("required", HONOURED),
    "tools": ([TOOL], HONOURED),
    "top_logprobs": (2, HONOURED),
    "top_p": (0.5, HONOURED),
    "user": ("end-user-1", HONOURED),
    "verbosity": ("low", REFUSED),
    "web_search_options": ({}, REFUSED),
}
# Values of refused fields that ask for nothing: accepted as no-ops.
NO_OPS: dict[str, Any] = {"functions": [], "function_call": "none", "modalities": ["text"], "store": False,
                          "service_tier": "auto", "verbosity": "medium"}
COMPLETION_FIELDS: dict[str, tuple[Any, str]] = {
    "model": ("fake-llm", HONOURED), "prompt": (WORDS, HONOURED), "best_of": (3, REFUSED),
    "echo": (True, HONOURED), "frequency_penalty": (0.5, HONOURED), "logit_bias": ({"50256": -100}, HONOURED),
    "logprobs": (2, HONOURED), "max_tokens": (2, HONOURED), "n": (2, HONOURED), "presence_penalty": (0.5, HONOURED),
    "seed": (7, HONOURED), "stop": ([" gamma"], HONOURED), "stream": (True, HONOURED),
    "stream_options": ({"include_usage": True}, HONOURED), "suffix": ("the end", REFUSED),
    "temperature": (1.0, HONOURED), "top_p": (0.5, HONOURED), "user": ("end-user-1", HONOURED),
}
EMBEDDING_FIELDS: dict[str, tuple[Any, str]] = {
    "input": (WORDS, HONOURED), "model": ("fake-embedding", HONOURED), "dimensions": (8, HONOURED),
    "encoding_format": ("base64", HONOURED), "user": ("end-user-1", HONOURED),
}
# Fields that only mean something together with another one.
COMPANIONS: dict[str, dict[str, Any]] = {"top_logprobs": {"logprobs": True}, "stream_options": {"stream": True},
                                         "tool_choice": {"tools": [TOOL]}, "parallel_tool_calls": {"tools": [TOOL]}}
# Sampling extensions vLLM users send (not OpenAI's): honoured too.
EXTENSIONS: dict[str, tuple[Any, str]] = {"top_k": (1, HONOURED), "min_p": (1.0, HONOURED),
                                          "repetition_penalty": (1.3, HONOURED)}

PATHS = {"/v1/chat/completions": (CHAT, CHAT_FIELDS | EXTENSIONS, ChatCompletionRequest),
         "/v1/completions": (COMPLETION, COMPLETION_FIELDS | EXTENSIONS, CompletionRequest),
         "/v1/embeddings": (EMBEDDING, EMBEDDING_FIELDS, EmbeddingRequest)}
CASES = [(path, name) for path, (_, fields, _) in PATHS.items() for name in fields]


def fake_token(piece: str) -> int:
    """The fake engine's token id for a piece of text (model_service.engines.fake)."""
    return zlib.crc32(piece.encode()) % 1_000_000 + 10


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, Any]]:
    """Fake llm and embedding workers and a gateway (with its usage log) in front of them."""
    usage_log: Path = tmp_path_factory.mktemp("usage") / "usage.log"
    async with AsyncExitStack() as es:
        urls = {}
        for kind in ("llm", "embedding"):
            settings = WorkerSettings(_env_file=None, engine="fake", model_name=f"fake-{kind}", model_type=kind)
            urls[kind] = await es.enter_async_context(serve(create_worker(settings)))
        client = await es.enter_async_context(httpx.AsyncClient(timeout=30, trust_env=False))
        for url in urls.values():

            async def ready(url: str = url) -> bool:
                return (await client.get(f"{url}/health")).status_code == 200

            await eventually(ready, f"{url} ready")
        urls["gateway"], _ = await es.enter_async_context(gateway(list(urls.values()), usage_log=usage_log))
        yield {"client": client, "usage_log": usage_log, **urls}


def url_of(stack: dict[str, Any], where: str, path: str) -> str:
    if where == "gateway":
        return stack["gateway"] + path
    return stack["embedding" if path == "/v1/embeddings" else "llm"] + path


async def test_every_spec_field_is_declared() -> None:
    """A field the request models do not declare would be an unknown extra: accepted and dropped."""
    for _, fields, model in PATHS.values():
        assert set(fields) <= set(model.model_fields), set(fields) - set(model.model_fields)


@pytest.mark.parametrize("where", ["worker", "gateway"])
@pytest.mark.parametrize(("path", "name"), CASES)
async def test_each_field_is_honoured_or_refused_by_name(stack: dict[str, Any], where: str, path: str,
                                                         name: str) -> None:
    base, fields, _ = PATHS[path]
    value, fate = fields[name]
    body = {**base, **COMPANIONS.get(name, {}), name: value}
    resp = await stack["client"].post(url_of(stack, where, path), json=body)
    if fate == REFUSED:
        assert resp.status_code == 400, resp.text
        err = resp.json()["error"]
        assert (err["code"], err["param"], err["type"]) == ("unsupported_parameter", name, "invalid_request_error")
        assert name in err["message"]
        if name in NO_OPS:
            ok = await stack["client"].post(url_of(stack, where, path), json={**base, name: NO_OPS[name]})
            assert ok.status_code == 200, ok.text
    else:
        assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("where", ["worker", "gateway"])
async def test_a_tool_call_in_the_history_is_rendered(stack: dict[str, Any], where: str) -> None:
    """The assistant's calls and the tool's result reach the prompt; the fake answers the last line."""
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    messages = [{"role": "user", "content": "weather?"}, {"role": "assistant", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny and warm"}]
    assert await chat_text(stack, where, messages=messages, tools=[TOOL]) == "sunny and warm"


async def chat_text(stack: dict[str, Any], where: str, **fields: Any) -> str:
    resp = await stack["client"].post(url_of(stack, where, "/v1/chat/completions"), json={**CHAT, **fields})
    assert resp.status_code == 200, resp.text
    return resp.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("where", ["worker", "gateway"])
async def test_logit_bias_bans_a_word_and_top_k_min_p_keep_the_order(stack: dict[str, Any], where: str) -> None:
    """The fake "model" shows what it can: -100 bans a token's word; top_k=1 and min_p=1 sample the
    one likeliest word, like temperature 0, where temperature 1 alone shuffles the words."""
    assert await chat_text(stack, where) == WORDS
    assert await chat_text(stack, where, logit_bias={str(fake_token(" gamma")): -100}) == WORDS.replace(" gamma", "")
    assert await chat_text(stack, where, logit_bias={str(fake_token(" gamma")): -5}) == WORDS  # a nudge, not a ban
    shuffled = {await chat_text(stack, where, temperature=1.0, seed=s) for s in range(4)}
    assert shuffled != {WORDS}
    for knob in ({"top_k": 1}, {"min_p": 1.0}):
        assert {await chat_text(stack, where, temperature=1.0, seed=s, **knob) for s in range(4)} == {WORDS}


@pytest.mark.parametrize("where", ["worker", "gateway"])
@pytest.mark.parametrize(("bias", "why"), [({"1000010": 1}, "outside"), ({"-1": 1}, "token ids"),
                                           ({"word": 1}, "token ids"), ({"10": 101}, "between -100 and 100")])
async def test_bad_logit_bias_is_400_naming_it(stack: dict[str, Any], where: str, bias: dict[str, Any],
                                              why: str) -> None:
    resp = await stack["client"].post(url_of(stack, where, "/v1/chat/completions"), json={**CHAT, "logit_bias": bias})
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["param"] == "logit_bias" and why in err["message"]


async def test_user_and_metadata_reach_the_usage_log(stack: dict[str, Any]) -> None:
    body = {**CHAT, "user": "end-user-7", "metadata": {"project": "p1"}, "safety_identifier": "hash-7"}
    resp = await stack["client"].post(stack["gateway"] + "/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    emb = await stack["client"].post(stack["gateway"] + "/v1/embeddings", json={**EMBEDDING, "user": "end-user-8"})
    assert emb.status_code == 200, emb.text
    wanted = {("end-user-7", "/v1/chat/completions"), ("end-user-8", "/v1/embeddings")}

    async def logged() -> bool:
        if not stack["usage_log"].exists():
            return False
        lines = [json.loads(line) for line in stack["usage_log"].read_text().splitlines()]
        return wanted <= {(line.get("user"), line["endpoint"]) for line in lines}

    await eventually(logged, "the usage log lines")
    lines = [json.loads(line) for line in stack["usage_log"].read_text().splitlines()]
    chat = next(line for line in lines if line.get("user") == "end-user-7")
    assert chat["metadata"] == {"project": "p1"} and chat["safety_identifier"] == "hash-7"
    plain = next(line for line in lines if "user" not in line)  # only sent fields are logged
    assert "metadata" not in plain


@pytest.mark.parametrize("where", ["worker", "gateway"])
async def test_metadata_must_be_strings(stack: dict[str, Any], where: str) -> None:
    resp = await stack["client"].post(url_of(stack, where, "/v1/chat/completions"),
                                      json={**CHAT, "metadata": {"n": 1}})
    assert resp.status_code == 400 and resp.json()["error"]["param"].startswith("metadata")


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_call_answers_are_counted_in_the_usage_log(stack: dict[str, Any], stream: bool) -> None:
    """A streamed answer made only of tool-call deltas (no content) still has its tokens counted."""
    user = f"tool-caller-{stream}"
    body = {**CHAT, "tools": [TOOL], "tool_choice": "required", "stream": stream, "user": user}
    resp = await stack["client"].post(stack["gateway"] + "/v1/chat/completions", json=body)
    assert resp.status_code == 200 and "tool_calls" in resp.text, resp.text

    async def logged() -> bool:
        return stack["usage_log"].exists() and user in stack["usage_log"].read_text()

    await eventually(logged, "the usage log line")
    line = next(json.loads(x) for x in stack["usage_log"].read_text().splitlines() if user in x)
    assert line["completion_tokens"] > 0 and line["total_tokens"] == line["prompt_tokens"] + line["completion_tokens"]
