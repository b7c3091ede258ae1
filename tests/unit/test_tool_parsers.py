"""Tool calls parsed out of the text each model family writes, and the streamed deltas built from it."""

from __future__ import annotations

import json

import pytest

from model_service.tool_parsers import parse_tool_calls
from model_service.tool_stream import ToolStream
from model_service.tools import OutputPlan

NAMES = {"get_weather", "get_time"}
WEATHER = {"city": "Paris", "unit": "c"}


@pytest.mark.parametrize(("text", "content", "calls"), [
    # Hermes / Qwen: blocks after optional text
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}\n</tool_call>',
     None, [("get_weather", WEATHER)]),
    ('Let me look.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}</tool_call>'
     '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>',
     "Let me look.", [("get_weather", WEATHER), ("get_time", {})]),
    # Llama 3: bare JSON with "parameters", the python tag, several joined by ";"
    ('{"name": "get_weather", "parameters": {"city": "Paris", "unit": "c"}}', None, [("get_weather", WEATHER)]),
    ('<|python_tag|>{"name": "get_time", "parameters": {}}; {"name": "get_weather", "parameters": '
     '{"city": "Paris", "unit": "c"}}', None, [("get_time", {}), ("get_weather", WEATHER)]),
    # Mistral: the marker (or, once the detokenizer dropped it, the bare array)
    ('[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}]', None,
     [("get_weather", WEATHER)]),
    ('[{"name": "get_time", "arguments": "{}"}]', None, [("get_time", {})]),
])
def test_each_family_parses(text: str, content: str | None, calls: list[tuple[str, dict]]) -> None:
    got_content, got = parse_tool_calls(text, NAMES)
    assert got_content == content
    assert [(c.name, json.loads(c.arguments)) for c in got] == calls


@pytest.mark.parametrize("text", [
    "The weather in Paris is sunny.",
    '{"name": "Paris", "population": 2000000}',  # JSON that is not a call
    '{"name": "delete_everything", "arguments": {}}',  # a function the request did not offer
    '<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>',  # cut short
    '[{"name": "get_time", "arguments": {}}, {"city": "Paris"}]',  # one item is not a call
])
def test_text_that_is_not_a_call_stays_content(text: str) -> None:
    assert parse_tool_calls(text, NAMES) == (text, [])


def _stream(plan: OutputPlan, pieces: list[str]) -> list[dict]:
    stream = ToolStream(plan)
    out = [d for p in pieces for d in stream.feed(p)]
    return out + stream.finish()


TOOLS = [{"type": "function", "function": {"name": n}} for n in sorted(NAMES)]


def test_a_named_function_streams_its_arguments_live() -> None:
    deltas = _stream(OutputPlan("named", TOOLS, "get_time"), ['{"tz"', ': "UTC"', "}"])
    head, *rest = [d["tool_calls"][0] for d in deltas]
    assert head["function"] == {"name": "get_time", "arguments": ""} and head["id"].startswith("call_")
    assert "".join(r["function"]["arguments"] for r in rest) == '{"tz": "UTC"}'
    assert all("id" not in r and "name" not in r["function"] for r in rest)


def test_auto_streams_text_and_holds_a_hermes_call_until_it_parses() -> None:
    pieces = ["Sure", ", one moment. <tool", '_call>{"name": "get_time", ', '"arguments": {}}</tool_call>']
    deltas = _stream(OutputPlan("auto", TOOLS), pieces)
    assert "".join(d.get("content", "") for d in deltas) == "Sure, one moment. "
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0]["function"]["name"] == "get_time" and calls[1]["function"]["arguments"] == "{}"


def test_auto_text_that_looked_like_a_call_comes_out_whole() -> None:
    deltas = _stream(OutputPlan("auto", TOOLS), ["{", '"a": 1}'])
    assert deltas == [{"content": '{"a": 1}'}]


def test_required_streams_each_call_live_as_the_array_grows() -> None:
    text = ('[{"name": "get_weather", "arguments": {"city": "Pa}ri\\"s", "unit": "c"}}, '
            '{"name": "get_time", "arguments": {}}]')
    stream = ToolStream(OutputPlan("required", TOOLS))
    seen = [stream.feed(text[i:i + 5]) for i in range(0, len(text), 5)]
    assert stream.finish() == []
    deltas = [d["tool_calls"][0] for step in seen for d in step]
    first_args = next(i for i, step in enumerate(seen) if any("arguments" in d["tool_calls"][0]["function"]
                                                             and d["tool_calls"][0]["function"]["arguments"]
                                                             for d in step))
    assert first_args < len(seen) - 3  # pieces went out long before the answer ended
    heads = [d for d in deltas if "id" in d]
    assert [(h["index"], h["function"]["name"]) for h in heads] == [(0, "get_weather"), (1, "get_time")]
    args = {k: "".join(d["function"]["arguments"] for d in deltas if d["index"] == k) for k in (0, 1)}
    assert json.loads(args[0]) == {"city": 'Pa}ri"s', "unit": "c"} and json.loads(args[1]) == {}


def test_required_cut_short_before_a_call_comes_out_as_text() -> None:
    stream = ToolStream(OutputPlan("required", TOOLS))
    assert stream.feed('[{"name": "get_') == []
    assert stream.finish() == [{"content": '[{"name": "get_'}] and not stream.called
