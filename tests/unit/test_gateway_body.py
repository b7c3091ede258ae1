"""Body handling and settings parsing: the gateway reads only ``model`` and ``stream``."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from common.errors import InvalidRequestError
from gateway.request import body_for_model, parse_body
from gateway.settings import GatewaySettings


@pytest.mark.parametrize("raw", [b"", b"{", b"{'model': 1}", b"\xff\xfe", b"nan-sense"])
def test_malformed_json_is_400_invalid_json(raw: bytes) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_body(raw)
    assert info.value.status == 400 and info.value.code == "invalid_json"
    assert info.value.body()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("raw", [b"[]", b"1", b'"text"', b"null"])
def test_json_that_is_not_an_object_is_400(raw: bytes) -> None:
    with pytest.raises(InvalidRequestError, match="JSON object"):
        parse_body(raw)


def test_body_is_parsed_without_validating_other_fields() -> None:
    assert parse_body(b'{"model": "m", "messages": 5, "x": [1]}') == {"model": "m", "messages": 5, "x": [1]}


def test_original_bytes_are_forwarded_when_model_is_given() -> None:
    raw = b'{ "model" : "m",   "messages": [] }'
    assert body_for_model(raw, json.loads(raw), "m") is raw


def test_resolved_default_model_is_injected_when_absent() -> None:
    raw = b'{"messages": [{"role": "user", "content": "hi"}]}'
    out = json.loads(body_for_model(raw, json.loads(raw), "chat-a"))
    assert out == {"messages": [{"role": "user", "content": "hi"}], "model": "chat-a"}


def test_workers_from_comma_separated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_WORKERS", " http://127.0.0.1:8000/ ,http://w2:8001,, http://127.0.0.1:8000")
    assert GatewaySettings().workers == ["http://127.0.0.1:8000", "http://w2:8001"]


def test_workers_from_json_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_WORKERS", '["http://a:1", "https://b:2/"]')
    monkeypatch.setenv("GATEWAY_DEFAULT_CHAT_MODEL", "qwen")
    monkeypatch.setenv("GATEWAY_PORT", "9999")
    settings = GatewaySettings()
    assert settings.workers == ["http://a:1", "https://b:2"]
    assert settings.default_chat_model == "qwen" and settings.port == 9999


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_WORKERS", raising=False)
    settings = GatewaySettings(_env_file=None)
    assert settings.port == 8080 and settings.workers == [] and settings.retries >= 1


@pytest.mark.parametrize("value", ["127.0.0.1:8000", "[not json"])
def test_bad_worker_urls_are_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("GATEWAY_WORKERS", value)
    with pytest.raises(ValidationError):
        GatewaySettings()
