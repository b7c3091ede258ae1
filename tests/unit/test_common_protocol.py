"""OpenAI request models: what is accepted, what is refused, and with which param."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from common.protocol import SSE_DONE, ChatCompletionRequest, CompletionRequest, EmbeddingRequest, ImagePart, sse
from common.responses import Usage


def chat(**kw):
    return ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], **kw})


def test_chat_defaults_and_unknown_fields_tolerated():
    req = chat(some_client_extra=True)
    assert req.model is None and req.n == 1 and req.stream is False
    assert req.stop_list() == [] and req.include_usage() is False


def test_chat_token_limit_prefers_max_completion_tokens():
    assert chat(max_tokens=5).token_limit() == 5
    assert chat(max_tokens=5, max_completion_tokens=7).token_limit() == 7


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", 3), ("temperature", "hot"), ("top_p", 0), ("n", 0), ("n", 1000),
        ("max_tokens", 0), ("presence_penalty", 2.5), ("frequency_penalty", -3),
        ("stop", ["a", "b", "c", "d", "e"]), ("stop", ""), ("stream", "maybe"),
    ],
)
def test_chat_refuses_bad_values(field, value):
    with pytest.raises(ValidationError) as info:
        chat(**{field: value})
    assert info.value.errors()[0]["loc"][0] == field


def test_chat_requires_messages():
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({"messages": []})
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({"messages": [{"role": "wizard", "content": "x"}]})


def test_content_parts_and_images():
    req = ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is "},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "this?"},
    ]}]})
    msg = req.messages[0]
    assert msg.text() == "what is this?"
    assert msg.has_images() and req.has_images()
    assert isinstance(msg.content[1], ImagePart)


def test_stream_usage_only_when_streaming():
    assert chat(stream=True, stream_options={"include_usage": True}).include_usage()
    assert not chat(stream=False, stream_options={"include_usage": True}).include_usage()


def test_completion_prompts():
    assert CompletionRequest(prompt="a").prompts() == ["a"]
    assert CompletionRequest(prompt=["a", "b"]).prompts() == ["a", "b"]
    assert CompletionRequest(prompt="a").max_tokens == 16


def test_embedding_inputs_and_format():
    assert EmbeddingRequest(input="a").inputs() == ["a"]
    assert EmbeddingRequest(input=["a", "b"], encoding_format="base64").encoding_format == "base64"
    with pytest.raises(ValidationError):
        EmbeddingRequest(input=["a"], encoding_format="hex")
    with pytest.raises(ValidationError):
        EmbeddingRequest(input=[])


def test_usage_and_sse():
    assert Usage.of(3, 4).total_tokens == 7
    assert sse({"a": 1}) == b'data: {"a":1}\n\n'
    assert SSE_DONE == b"data: [DONE]\n\n"
