"""OpenAI's response and chunk shapes, built by the worker without any engine."""

from __future__ import annotations

from common.responses import Usage
from model_service.chunks import ChatChunks, CompletionChunks, chat_completion, completion
from model_service.engines.base import SampledToken
from model_service.generation import ChoiceResult


def test_chat_chunks_leave_keys_out_like_openai():
    c = ChatChunks("chatcmpl-1", 123, "m", include_usage=False, want_logprobs=False)
    role = c.role(0)
    assert role["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                "finish_reason": None}]
    assert "usage" not in role and role["object"] == "chat.completion.chunk"
    assert c.content(0, "Hi", [])["choices"][0]["delta"] == {"content": "Hi"}
    fin = c.finish(1, "length")["choices"][0]
    assert fin == {"index": 1, "delta": {}, "logprobs": None, "finish_reason": "length"}


def test_chat_usage_chunk_and_null_usage_elsewhere():
    c = ChatChunks("chatcmpl-1", 123, "m", include_usage=True, want_logprobs=True)
    assert c.role(0)["usage"] is None
    last = c.usage(Usage.of(3, 4))
    assert last["choices"] == [] and last["usage"] == {"prompt_tokens": 3, "completion_tokens": 4,
                                                       "total_tokens": 7}
    lp = c.content(0, "é", [SampledToken("é", -0.1, [("é", -0.1), ("e", -2.0)])])["choices"][0]["logprobs"]
    assert lp["content"][0]["bytes"] == [0xC3, 0xA9]
    assert [t["token"] for t in lp["content"][0]["top_logprobs"]] == ["é", "e"]


def test_completion_chunks():
    c = CompletionChunks("cmpl-1", 5, "m", include_usage=False, want_logprobs=False)
    chunk = c.text(2, " hi", finish_reason="stop")
    assert chunk["object"] == "text_completion" and "usage" not in chunk
    assert chunk["choices"] == [{"index": 2, "text": " hi", "logprobs": None, "finish_reason": "stop"}]


def test_full_responses():
    results = [ChoiceResult(0, "a", "stop", 2), ChoiceResult(1, "b", "length", 3)]
    body = chat_completion("m", results, 5, want_logprobs=False).model_dump()
    assert body["object"] == "chat.completion" and body["usage"]["total_tokens"] == 10
    assert body["choices"][1]["message"]["content"] == "b" and body["choices"][1]["finish_reason"] == "length"
    lp = [SampledToken(" x", -0.5, [(" x", -0.5)])]
    done = completion("m", [ChoiceResult(0, " x", "stop", 1, lp)], ["Say"], 1, want_logprobs=True).model_dump()
    choice = done["choices"][0]
    assert choice["text"] == "Say x"
    assert choice["logprobs"]["text_offset"] == [3] and choice["logprobs"]["top_logprobs"] == [{" x": -0.5}]
