"""Registry configuration: static upstreams (and their secrets), URL checks, registration bodies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from service_registry.schemas import Registration
from service_registry.settings import RegistrySettings, StaticUpstream
from service_registry.urls import api_base_of, normalize_url

KEY = "sk-very-secret-123"


def test_static_upstreams_from_env_json(monkeypatch: pytest.MonkeyPatch) -> None:
    upstreams = [{"id": "vllm", "base_url": "http://10.0.0.5:8000", "api_key": KEY,
                  "models": {"qwen": "Qwen/Qwen2.5-0.5B-Instruct"}, "type": "llm"},
                 {"id": "emb", "base_url": "https://api.example.com/openai/v1/", "models": ["e5"],
                  "type": "embedding", "priority": 50}]
    monkeypatch.setenv("REGISTRY_STATIC_UPSTREAMS", json.dumps(upstreams))
    monkeypatch.setenv("REGISTRY_POLL_INTERVAL_S", "0.5")
    settings = RegistrySettings(_env_file=None)
    assert settings.poll_interval_s == 0.5 and settings.port == 8070
    vllm, emb = settings.all_static_upstreams()
    assert vllm.base_url == "http://10.0.0.5:8000/v1" and vllm.priority == 100
    assert vllm.api_key is not None and vllm.api_key.get_secret_value() == KEY
    assert emb.base_url == "https://api.example.com/openai/v1" and emb.models == {"e5": "e5"}


def test_public_view_never_carries_the_key() -> None:
    up = StaticUpstream(id="x", base_url="http://h:1/v1", api_key=KEY, models={"pub": "up"})
    record = up.record()
    assert record.has_api_key and record.kind == "external" and record.upstream_model("pub") == "up"
    assert KEY not in json.dumps(record.model_dump(mode="json"))
    assert KEY not in str(record.model_dump()) and KEY not in repr(record)
    # The configuration object itself masks the key too, should it ever be logged.
    assert KEY not in repr(up) and KEY not in str(up) and KEY not in up.model_dump_json()


def test_key_from_named_env_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_UPSTREAM_KEY", KEY)
    up = StaticUpstream(id="x", base_url="http://h:1", api_key_env="MY_UPSTREAM_KEY", models=["m"])
    assert up.api_key is not None and up.api_key.get_secret_value() == KEY
    monkeypatch.delenv("MY_UPSTREAM_KEY")
    with pytest.raises(ValidationError, match="not set"):
        StaticUpstream(id="x", base_url="http://h:1", api_key_env="MY_UPSTREAM_KEY", models=["m"])


def test_static_file_and_duplicate_ids(tmp_path: Path) -> None:
    path = tmp_path / "upstreams.json"
    path.write_text(json.dumps({"upstreams": [{"id": "a", "base_url": "http://h:1", "models": ["m"]}]}))
    settings = RegistrySettings(_env_file=None, static_file=path)
    assert [u.id for u in settings.all_static_upstreams()] == ["a"]
    both = RegistrySettings(_env_file=None, static_file=path,
                            static_upstreams=[{"id": "a", "base_url": "http://h:2", "models": ["m"]}])
    with pytest.raises(ValueError, match="configured twice"):
        both.all_static_upstreams()


@pytest.mark.parametrize("bad", [
    {"base_url": "ftp://h/v1"}, {"models": {}}, {"models": {"": "x"}}, {"type": "vision"}, {"surprise": 1},
])
def test_bad_static_entries_are_refused(bad: dict) -> None:
    entry = {"id": "a", "base_url": "http://h:1", "models": ["m"], **bad}
    with pytest.raises(ValidationError):
        StaticUpstream(**entry)


@pytest.mark.parametrize(("raw", "expected"), [
    ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
    (" https://worker-1.local:8443 ", "https://worker-1.local:8443"),
    ("http://[::1]:8000", "http://[::1]:8000"),
])
def test_normalize_url_accepts(raw: str, expected: str) -> None:
    assert normalize_url(raw) == expected


@pytest.mark.parametrize("raw", [
    "127.0.0.1:8000", "ftp://h", "http://", "http://user:pw@h:1", "http://h:1/?x=1", "http://h:1/#f",
    "http://0.0.0.0:8000", "http://[::]:8000", "http://h:99999", "unix:///tmp/sock",
])
def test_normalize_url_refuses(raw: str) -> None:
    with pytest.raises(ValueError):
        normalize_url(raw)


def test_api_base_adds_v1_only_without_a_path() -> None:
    assert api_base_of("http://vllm:8000") == "http://vllm:8000/v1"
    assert api_base_of("http://vllm:8000/v1/") == "http://vllm:8000/v1"
    assert api_base_of("https://host/openai/v1") == "https://host/openai/v1"


def test_registration_validation() -> None:
    good = Registration(url="http://127.0.0.1:8000/", models=[" m ", "m", "n"], type="embedding",
                        gpu_indices=[3, 1, 3])
    assert good.url == "http://127.0.0.1:8000" and good.models == ["m", "n"] and good.gpu_indices == [1, 3]
    for bad in ({"models": []}, {"models": [""]}, {"url": "ftp://x"}, {"type": "nope"}, {"capacity": 0},
                {"gpu_indices": [-1]}, {"heartbeat_interval": 0}, {"id": "has space"}, {"extra": 1}):
        with pytest.raises(ValidationError):
            Registration(**{"url": "http://h:1", "models": ["m"], "type": "llm", **bad})
