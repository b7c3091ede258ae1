"""The gateway documents the bodies of the OpenAI routes it passes through without parsing them."""

from __future__ import annotations

import json
from typing import Any

import jsonschema_rs
import pytest
from pydantic import ValidationError

from common.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from gateway.app import create_app
from gateway.settings import GatewaySettings

JSON_ROUTES = {"/v1/chat/completions": ChatCompletionRequest, "/v1/completions": CompletionRequest,
               "/v1/embeddings": EmbeddingRequest}
IMAGE = "data:image/png;base64,iVBORw0KGgo="

SAMPLES: list[tuple[str, dict[str, Any], bool]] = [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, True),
    ("/v1/chat/completions", {"model": "m", "stream": True, "stream_options": {"include_usage": True}, "n": 2,
                              "messages": [{"role": "user", "content": [
                                  {"type": "text", "text": "what is this?"},
                                  {"type": "image_url", "image_url": {"url": IMAGE, "detail": "low"}}]}],
                              "unknown_extra": {"kept": "out of the way"}}, True),
    ("/v1/chat/completions", {"messages": []}, False),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, False),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "temperature": 3}, False),
    ("/v1/completions", {"prompt": ["a", "b"], "max_tokens": 4}, True),
    ("/v1/completions", {"prompt": "a", "logprobs": 9}, False),
    ("/v1/embeddings", {"input": ["a", "b"], "encoding_format": "base64"}, True),
    ("/v1/embeddings", {"input": "a", "encoding_format": "hex"}, False),
]


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return create_app(GatewaySettings(_env_file=None)).openapi()


def body_schema(spec: dict[str, Any], path: str, media: str) -> dict[str, Any]:
    body = spec["paths"][path]["post"]["requestBody"]
    assert body["required"] is True
    return body["content"][media]["schema"]


@pytest.mark.parametrize("path", list(JSON_ROUTES))
def test_json_routes_document_a_self_contained_body(spec: dict[str, Any], path: str) -> None:
    schema = body_schema(spec, path, "application/json")
    assert "$ref" not in json.dumps(schema)  # nothing points into components the gateway does not have
    assert schema["type"] == "object" and schema["additionalProperties"] is True


@pytest.mark.parametrize("path", ["/v1/audio/transcriptions", "/v1/audio/translations"])
def test_audio_routes_document_openais_multipart_form(spec: dict[str, Any], path: str) -> None:
    schema = body_schema(spec, path, "multipart/form-data")
    assert schema["required"] == ["file"]
    assert schema["properties"]["file"]["format"] == "binary"
    assert ("language" in schema["properties"]) == path.endswith("transcriptions")


@pytest.mark.parametrize(("path", "body", "valid"), SAMPLES)
def test_the_documented_schema_agrees_with_the_workers_model(spec: dict[str, Any], path: str, body: dict[str, Any],
                                                             valid: bool) -> None:
    documented = jsonschema_rs.validator_for(body_schema(spec, path, "application/json")).is_valid(body)
    try:
        JSON_ROUTES[path].model_validate(body)
        parsed = True
    except ValidationError:
        parsed = False
    assert documented is parsed is valid
