"""Tool calls and structured outputs through the worker's HTTP layer with the fake engine, whose
byte-level "model" decodes under the same llguidance grammars as the real engine (its answers are the
shortest valid ones), and the 400s that need no model at all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from common.errors import InvalidRequestError
from common.protocol import ChatCompletionRequest
from model_service.engines.vision import TransformersVision
from model_service.settings import WorkerSettings
from model_service.tools import plan_output
from tests.helpers.workers import worker_client_for

pytestmark = pytest.mark.asyncio

FAKE = WorkerSettings(_env_file=None, engine="fake", model_name="fake-llm", model_type="llm")
ARGS = {"type": "object", "required": ["city"], "properties": {"city": {"type": "string", "minLength": 2}}}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": ARGS}},
         {"type": "function", "function": {"name": "get_time"}}]
ASK = {"messages": [{"role": "user", "content": "weather in Paris"}], "tools": TOOLS, "max_tokens": 80}


async def _chat(**body: Any) -> Any:
    async with worker_client_for(FAKE) as client:
        return await client.post("/v1/chat/completions", json=body)


async def test_required_answers_tool_calls() -> None:
    resp = await _chat(**{**ASK, "tools": TOOLS[:1]}, tool_choice="required", parallel_tool_calls=False)
    assert resp.status_code == 200, resp.text
    choice = resp.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert (call["function"]["name"], json.loads(call["function"]["arguments"])) == ("get_weather", {"city": "aa"})


async def test_a_named_function_streams_in_openai_chunk_shape() -> None:
    resp = await _chat(**ASK, tool_choice={"type": "function", "function": {"name": "get_weather"}}, stream=True)
    chunks = [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: {")]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0]["function"] == {"name": "get_weather", "arguments": ""} and calls[0]["id"].startswith("call_")
    assert len(calls) > 2 and all(set(c) == {"index", "function"} for c in calls[1:])  # arguments in pieces
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {"city": "aa"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_json_object_and_json_schema_answers_parse() -> None:
    for fmt, want in [({"type": "json_object"}, {}),
                      ({"type": "json_schema", "json_schema": {"name": "w", "schema": ARGS}}, {"city": "aa"})]:
        resp = await _chat(messages=ASK["messages"], response_format=fmt)
        assert resp.status_code == 200, resp.text
        assert json.loads(resp.json()["choices"][0]["message"]["content"]) == want


@pytest.mark.parametrize(("body", "param", "words"), [
    ({"tools": None, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "if": {}}}}}, "response_format", '"if"'),
    ({"response_format": {"type": "json_schema"}}, "response_format", "json_schema"),
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", "nope"),
    ({"tools": None, "tool_choice": "required"}, "tool_choice", "needs tools"),
    ({"tool_choice": "auto", "response_format": {"type": "json_object"}}, "response_format", "auto"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools", "pattern"),
])
async def test_bad_tool_and_format_fields_are_400s_naming_them(body: dict[str, Any], param: str, words: str) -> None:
    resp = await _chat(**{**ASK, **body})
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["param"].startswith(param) and words in err["message"], err


async def test_an_engine_without_constrained_decoding_refuses_by_name(tmp_path: Path) -> None:
    """The vision engine decodes without grammars: a 400 naming it, before anything is loaded."""
    engine = TransformersVision(WorkerSettings(_env_file=None, model_name="m", model_type="multimodal",
                                               model_path=str(tmp_path)))
    req = ChatCompletionRequest.model_validate({"messages": ASK["messages"],
                                                "response_format": {"type": "json_object"}})
    with pytest.raises(InvalidRequestError, match="transformers-vision engine") as err:
        plan_output(req, engine, "m")
    assert err.value.param == "response_format" and err.value.status == 400

