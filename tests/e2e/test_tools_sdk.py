"""Tool calling and structured outputs as a user sees them: the openai SDK through the gateway of a
real stack, on the real starter chat model (SmolLM2-135M, whose chat template has no tools support,
so tools go through the generic system prompt and constrained decoding)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jsonschema
import openai
import pytest

from stack.starters import STARTER_LLM

pytestmark = pytest.mark.e2e

LLM = STARTER_LLM.model_id
WEATHER_ARGS = {"type": "object", "additionalProperties": False, "required": ["city", "unit"],
                "properties": {"city": {"type": "string", "maxLength": 24},
                               "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}
TIME_ARGS = {"type": "object", "additionalProperties": False, "required": ["timezone"],
             "properties": {"timezone": {"type": "string", "maxLength": 24}}}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                           "parameters": WEATHER_ARGS}},
         {"type": "function", "function": {"name": "get_time", "description": "Current time in a time zone",
                                           "parameters": TIME_ARGS}}]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather like in Paris right now?"}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def client(real_stack):
    with openai.OpenAI(base_url=real_stack.base_url, api_key="unused", max_retries=0, timeout=120) as c:
        yield c


def _streamed_calls(client: openai.OpenAI, **kwargs: Any) -> tuple[list[dict[str, str]], str, Any]:
    """Assemble streamed tool-call deltas as a client library does; check OpenAI's chunk order."""
    calls: dict[int, dict[str, str]] = {}
    finish, usage = None, None
    for chunk in client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for d in choice.delta.tool_calls or []:
                if d.index not in calls:  # the first delta of a call: its id and name, arguments to come
                    assert d.id and d.type == "function" and d.function.name
                    calls[d.index] = {"id": d.id, "name": d.function.name, "arguments": d.function.arguments or ""}
                else:
                    assert d.id is None and not d.function.name
                    calls[d.index]["arguments"] += d.function.arguments or ""
    return [calls[i] for i in sorted(calls)], finish, usage


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("choice", ["required", NAMED], ids=["required", "named"])
def test_forced_tool_calls_validate_against_the_schema(client, choice, stream):
    kwargs = {"model": LLM, "messages": ASK, "tools": TOOLS, "tool_choice": choice, "temperature": 0,
              "max_tokens": 60}
    if stream:
        calls, finish, usage = _streamed_calls(client, **kwargs)
    else:
        resp = client.chat.completions.create(**kwargs)
        message, finish, usage = resp.choices[0].message, resp.choices[0].finish_reason, resp.usage
        assert message.content is None and message.tool_calls
        calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in message.tool_calls]
    assert finish == "tool_calls"
    assert calls and all(c["id"].startswith("call_") for c in calls)
    if choice == NAMED:
        assert [c["name"] for c in calls] == ["get_weather"]
    for call in calls:
        jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])
    assert usage.completion_tokens > 0 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_a_tool_result_round_trip_answers(client):
    first = client.chat.completions.create(model=LLM, messages=ASK, tools=TOOLS, tool_choice=NAMED,
                                           temperature=0, max_tokens=60)
    call = first.choices[0].message.tool_calls[0]
    history = [*ASK, first.choices[0].message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "clear"})}]
    second = client.chat.completions.create(model=LLM, messages=history, tools=TOOLS, tool_choice="none",
                                            temperature=0, max_tokens=24)
    assert second.choices[0].message.content and not second.choices[0].message.tool_calls
    assert second.choices[0].finish_reason in {"stop", "length"}
    alone = client.chat.completions.create(model=LLM, messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=1)
    assert second.usage.prompt_tokens > alone.usage.prompt_tokens + 20  # the call and its result were rendered


PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age", "hobbies"],
          "properties": {"name": {"type": "string", "maxLength": 16}, "age": {"type": "integer", "minimum": 0,
                                                                               "maximum": 120},
                         "hobbies": {"type": "array", "maxItems": 2, "items": {"type": "string", "maxLength": 12}}}}
PLACE = {"type": "object", "additionalProperties": False, "required": ["city", "country", "capital"],
         "properties": {"city": {"type": "string", "maxLength": 16}, "country": {"type": "string", "maxLength": 16},
                        "capital": {"type": "boolean"}, "rating": {"type": "number", "minimum": 0, "maximum": 5}}}
SUBJECTS = ["a retired pilot", "a young chef", "a chess champion", "a beekeeper", "a marathon runner",
            "a jazz pianist", "a lighthouse keeper", "a botanist", "a taxi driver", "a painter",
            "Tokyo", "Lyon", "Nairobi", "Lima", "Oslo", "Cairo", "Toronto", "Hanoi", "Perth", "Quito"]


def test_json_schema_answers_validate_across_twenty_prompts(client):
    def ask(subject: str) -> tuple[Any, dict[str, Any]]:
        schema = PERSON if subject.startswith("a ") else PLACE
        fmt = {"type": "json_schema", "json_schema": {"name": "record", "schema": schema, "strict": True}}
        resp = client.chat.completions.create(model=LLM, max_tokens=64, temperature=0.7, seed=len(subject),
                                              response_format=fmt,
                                              messages=[{"role": "user", "content": f"Describe {subject} as JSON."}])
        return resp.choices[0], schema

    with ThreadPoolExecutor(len(SUBJECTS)) as pool:  # concurrent: they share the worker's batch
        answers = list(pool.map(ask, SUBJECTS))
    for choice, schema in answers:
        assert choice.finish_reason == "stop", choice.message.content
        jsonschema.validate(json.loads(choice.message.content), schema)


@pytest.mark.parametrize(("field", "value", "feature"), [
    ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}}}}, "if"),
    ("tools", [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "dependentSchemas": {"a": {"required": ["b"]}}}}}], "dependentSchemas"),
])
def test_an_unsupported_schema_feature_is_a_400_naming_it(client, field, value, feature):
    extra = {"tool_choice": "required"} if field == "tools" else {}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=LLM, messages=ASK, max_tokens=8, **{field: value}, **extra)
    body = err.value.body
    assert body["param"] == field and body["code"] == "unsupported_schema" and feature in body["message"]


def test_auto_on_a_template_without_tools_is_a_clear_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=LLM, messages=ASK, tools=TOOLS, max_tokens=8)
    assert err.value.body["param"] == "tool_choice" and err.value.body["code"] == "tools_not_supported"
