"""What every chat engine must do for the ``openai`` SDK through the gateway, written once.

Each engine's SDK module (llama.cpp, vLLM) starts its own worker and gateway and runs these checks
against it, so the engines are held to the same answers: usage, streaming with the worker's usage
chunk, stop strings, max_tokens, ``n`` with a seed, logprobs, and errors in our shape.
"""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

# A system prompt and "one sentence": with the default system prompt the first greedy token is a near tie.
QUESTION = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def chat_with_usage(client: openai.OpenAI, model: str) -> None:
    resp = client.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=24)
    choice = resp.choices[0]
    assert "Paris" in choice.message.content and choice.finish_reason == "stop"
    assert resp.model == model and resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def stream_matches_non_stream_with_usage(client: openai.OpenAI, model: str) -> None:
    """The engine is never asked for a usage chunk: the last chunk's usage is the worker's."""
    kwargs = {"model": model, "messages": QUESTION, "temperature": 0, "max_tokens": 24}
    full = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage == full.usage


def stop_and_max_tokens(client: openai.OpenAI, model: str) -> None:
    stopped = client.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=24,
                                             stop=["Paris"])
    assert "Paris" not in stopped.choices[0].message.content and stopped.choices[0].finish_reason == "stop"
    short = client.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3


def n_choices_with_seed(client: openai.OpenAI, model: str) -> None:
    kwargs = {"model": model, "messages": QUESTION, "n": 2, "max_tokens": 8, "temperature": 0.9, "seed": 7}
    resp = client.chat.completions.create(**kwargs)
    assert [c.index for c in resp.choices] == [0, 1] and all(c.message.content for c in resp.choices)
    again = client.chat.completions.create(**kwargs)
    assert [c.message.content for c in again.choices] == [c.message.content for c in resp.choices]


def logprobs(client: openai.OpenAI, model: str) -> None:
    resp = client.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=4,
                                          logprobs=True, top_logprobs=2)
    tokens = resp.choices[0].logprobs.content
    assert len(tokens) == 4 and all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in tokens)
    assert "".join(t.token for t in tokens) == resp.choices[0].message.content


def errors_in_our_shape(client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such/model", messages=QUESTION)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=model, messages=QUESTION, temperature=7)
    assert bad.value.status_code == 400 and bad.value.body["param"] == "temperature", bad.value.body
    assert set(bad.value.body) == {"message", "type", "param", "code"}


def structured_outputs_and_forced_tool_calls(client: openai.OpenAI, model: str) -> None:
    """The engine constrains by the JSON Schema the worker passes on (llama-server's native
    ``json_schema``, vLLM's ``structured_outputs``); the answer parses and validates."""
    population = {"type": "integer", "minimum": 0, "maximum": 99999999}
    schema = {"type": "object", "additionalProperties": False, "required": ["city", "population"],
              "properties": {"city": {"type": "string", "maxLength": 16}, "population": population}}
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}}
    resp = client.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=40,
                                          response_format=fmt)
    assert resp.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(resp.choices[0].message.content), schema)
    tool = {"type": "function", "function": {"name": "lookup_city", "parameters": schema}}
    called = client.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=80,
                                            tools=[tool], tool_choice="required", parallel_tool_calls=False)
    assert called.choices[0].finish_reason == "tool_calls", called.choices[0].message
    [call] = called.choices[0].message.tool_calls
    assert call.function.name == "lookup_city"
    jsonschema.validate(json.loads(call.function.arguments), schema)


CHECKS = (chat_with_usage, stream_matches_non_stream_with_usage, stop_and_max_tokens, n_choices_with_seed,
          logprobs, errors_in_our_shape, structured_outputs_and_forced_tool_calls)
