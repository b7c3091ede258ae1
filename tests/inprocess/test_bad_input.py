"""Bad input to the workers and the gateway: each answer has the right status and OpenAI's error shape.

Workers (fake engine) and the gateway in front of them run under uvicorn on loopback, so bodies travel
over real HTTP. The registries' share is in ``test_bad_input_registries.py``.
"""

from __future__ import annotations

import io
import json
import wave
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.helpers.http import JSON, MAX_BODY, assert_invalid_request
from tests.helpers.servers import gateway
from tests.helpers.workers import worker

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHAT = {"messages": [{"role": "user", "content": "the quick brown fox"}], "temperature": 0}
BODIES = {"/v1/chat/completions": CHAT, "/v1/completions": {"prompt": "the quick brown fox", "temperature": 0},
          "/v1/embeddings": {"input": "the quick brown fox"}}


def wav_bytes(seconds: float = 0.2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0" * int(16000 * seconds))
    return buf.getvalue()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[dict[str, Any]]:
    """Fake llm, embedding and transcription workers and the gateway, each with a 64 KiB body limit."""
    async with AsyncExitStack() as es:
        urls = {}
        for kind in ("llm", "embedding", "transcription"):
            urls[kind], _ = await es.enter_async_context(worker(f"fake-{kind}", kind, max_body_bytes=MAX_BODY,
                                                                max_audio_bytes=MAX_BODY // 2))
        client = await es.enter_async_context(httpx.AsyncClient(timeout=30, trust_env=False))
        urls["gateway"], _ = await es.enter_async_context(gateway(list(urls.values()), max_body_bytes=MAX_BODY))
        yield {"client": client, **urls}


def worker_for(path: str) -> str:
    return "embedding" if path == "/v1/embeddings" else "transcription" if "/audio/" in path else "llm"


TARGETS = [("worker", path) for path in BODIES] + [("gateway", path) for path in BODIES]


def url_of(stack: dict[str, Any], where: str, path: str) -> str:
    return (stack[worker_for(path)] if where == "worker" else stack["gateway"]) + path


# --- JSON bodies -------------------------------------------------------------------------------

NOT_JSON = {
    "malformed": b'{"model": ',
    "truncated": b'{"messages": [{"role": "user", "content": "hi"}',
    "non-utf8": b'{"input": "caf\xe9", "prompt": "\xff\xfe", "messages": []}',
    "array": b"[]",
    "array of objects": b'[{"input": "a"}]',
    "number": b"1",
    "string": b'"hello"',
    "null": b"null",
    "too deeply nested": b'{"x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
}


@pytest.mark.parametrize(("where", "path"), TARGETS)
@pytest.mark.parametrize("case", list(NOT_JSON))
async def test_a_body_that_is_not_a_json_object_is_400_invalid_json(stack: dict[str, Any], where: str, path: str,
                                                                    case: str) -> None:
    resp = await stack["client"].post(url_of(stack, where, path), content=NOT_JSON[case], headers=JSON)
    assert_invalid_request(resp, 400, code="invalid_json")


async def test_gateway_deeply_nested_json_is_400(stack: dict[str, Any]) -> None:
    resp = await stack["client"].post(stack["gateway"] + "/v1/chat/completions",
                                      content=NOT_JSON["too deeply nested"], headers=JSON)
    assert_invalid_request(resp, 400, code="invalid_json")


@pytest.mark.parametrize(("where", "path"), TARGETS)
async def test_an_empty_body_is_400(stack: dict[str, Any], where: str, path: str) -> None:
    resp = await stack["client"].post(url_of(stack, where, path), content=b"", headers=JSON)
    assert_invalid_request(resp, 400, code="invalid_json")


@pytest.mark.parametrize(("where", "path"), TARGETS)
async def test_a_body_over_the_limit_is_413(stack: dict[str, Any], where: str, path: str) -> None:
    huge = {**BODIES[path], "pad": "x" * (MAX_BODY + 1)}
    resp = await stack["client"].post(url_of(stack, where, path), json=huge)
    assert_invalid_request(resp, 413, code="payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        yield json.dumps(BODIES[path])[:-1].encode() + b', "pad": "'
        for _ in range(MAX_BODY // 1024 + 1):
            yield b"y" * 1024
        yield b'"}'

    resp = await stack["client"].post(url_of(stack, where, path), content=chunks(), headers=JSON)
    assert_invalid_request(resp, 413, code="payload_too_large")


@pytest.mark.parametrize(("where", "path"), TARGETS)
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_a_json_body_sent_as_another_type_is_415(stack: dict[str, Any], where: str, path: str,
                                                       content_type: str | None) -> None:
    """FastAPI parses JSON only when it is declared so (no CSRF through 'simple' requests): say so plainly.
    The gateway passes the Content-Type on, so its answer is the worker's."""
    headers = {"content-type": content_type} if content_type else {}
    resp = await stack["client"].post(url_of(stack, where, path), content=json.dumps(BODIES[path]).encode(),
                                      headers=headers)
    err = assert_invalid_request(resp, 415, code="unsupported_media_type")
    assert "application/json" in err["message"]


async def test_a_multipart_body_to_a_json_route_is_415_on_the_worker(stack: dict[str, Any]) -> None:
    resp = await stack["client"].post(stack["llm"] + "/v1/chat/completions", files={"file": ("a.txt", b"hi")})
    assert_invalid_request(resp, 415, code="unsupported_media_type")


WRONG_TYPES = [
    ("/v1/chat/completions", {"messages": "hi"}, "messages"),
    ("/v1/chat/completions", {"n": "2"}, "n"),
    ("/v1/chat/completions", {"n": True}, "n"),
    ("/v1/chat/completions", {"temperature": "hot"}, "temperature"),
    ("/v1/chat/completions", {"stream": "yes"}, "stream"),
    ("/v1/chat/completions", {"max_tokens": -1}, "max_tokens"),
    ("/v1/chat/completions", {"stream_options": "x"}, "stream_options"),
    ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "audio"}]}]},
     "messages[0].content[0]"),
    ("/v1/completions", {"prompt": 5}, "prompt"),
    ("/v1/completions", {"logprobs": False}, "logprobs"),
    ("/v1/completions", {"echo": "yes"}, "echo"),
    ("/v1/embeddings", {"input": 5}, "input"),
    ("/v1/embeddings", {"input": [1, "two"]}, "input"),  # token ids and text mixed
    ("/v1/embeddings", {"encoding_format": "hex"}, "encoding_format"),
    ("/v1/embeddings", {"dimensions": "8"}, "dimensions"),
]


@pytest.mark.parametrize("where", ["worker", "gateway"])
@pytest.mark.parametrize(("path", "change", "param"), WRONG_TYPES)
async def test_a_field_of_the_wrong_type_is_400_naming_it(stack: dict[str, Any], where: str, path: str,
                                                          change: dict[str, Any], param: str) -> None:
    resp = await stack["client"].post(url_of(stack, where, path), json={**BODIES[path], **change})
    assert_invalid_request(resp, 400, code="invalid_value", param=param)


def _stable(body: dict[str, Any]) -> Any:
    """An answer without what differs between two identical requests (ids, timestamps)."""
    return body.get("choices") or body.get("data")


@pytest.mark.parametrize(("where", "path"), TARGETS)
async def test_unknown_extra_fields_are_accepted_and_ignored(stack: dict[str, Any], where: str, path: str) -> None:
    """As OpenAI does: clients (Chat UI, newer SDKs) send fields this server does not know."""
    plain = await stack["client"].post(url_of(stack, where, path), json=BODIES[path])
    extra = {**BODIES[path], "frobnicate": {"deep": [1, 2]}, "tools": [], "metadata": {"k": "v"}, "store": False}
    resp = await stack["client"].post(url_of(stack, where, path), json=extra)
    assert plain.status_code == resp.status_code == 200, resp.text
    assert _stable(resp.json()) == _stable(plain.json())


@pytest.mark.parametrize(("where", "path"), TARGETS)
@pytest.mark.parametrize("model", ["../fake-llm", "..%2F..%2Fetc%2Fpasswd", "/etc/passwd", "..\\..\\x", "a\x00b"])
async def test_a_model_id_with_dot_dot_is_a_clean_404(stack: dict[str, Any], where: str, path: str,
                                                      model: str) -> None:
    resp = await stack["client"].post(url_of(stack, where, path), json={**BODIES[path], "model": model})
    assert_invalid_request(resp, 404, code="model_not_found", param="model")


# --- audio uploads -----------------------------------------------------------------------------

AUDIO_CASES = [
    ("json body", {"json": {"file": "x"}}, 415, "unsupported_media_type", None),
    ("text body", {"content": b"RIFF", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type",
     None),
    ("no boundary", {"content": b"x", "headers": {"content-type": "multipart/form-data"}}, 400, "invalid_multipart",
     None),
    ("no file", {"data": {"model": "fake-transcription"}, "files": {"other": ("a", b"1")}}, 400, "invalid_value",
     "file"),
    ("not audio", {"files": {"file": ("a.wav", b"hello", "audio/wav")}}, 400, "invalid_audio", "file"),
    ("unknown language", {"files": {"file": ("a.wav", wav_bytes())}, "data": {"language": "zz"}}, 400,
     "invalid_value", "language"),
    ("temperature text", {"files": {"file": ("a.wav", wav_bytes())}, "data": {"temperature": "hot"}}, 400,
     "invalid_value", "temperature"),
    ("bad format", {"files": {"file": ("a.wav", wav_bytes())}, "data": {"response_format": "xml"}}, 400,
     "invalid_value", "response_format"),
    ("model with dot dot", {"files": {"file": ("a.wav", wav_bytes())}, "data": {"model": "../x"}}, 404,
     "model_not_found", "model"),
    ("upload over the audio limit", {"files": {"file": ("a.wav", b"\0" * (MAX_BODY // 2 + 1))}}, 413,
     "payload_too_large", "file"),
    ("body over the limit", {"files": {"file": ("a.wav", b"\0" * (MAX_BODY + 1))}}, 413, "payload_too_large",
     None),
]


@pytest.mark.parametrize(("case", "kwargs", "status", "code", "param"), AUDIO_CASES, ids=[c[0] for c in AUDIO_CASES])
async def test_bad_uploads_to_the_transcription_worker(stack: dict[str, Any], case: str, kwargs: dict[str, Any],
                                                       status: int, code: str, param: str | None) -> None:
    resp = await stack["client"].post(stack["transcription"] + "/v1/audio/transcriptions", **kwargs)
    assert_invalid_request(resp, status, code=code, param=param)


async def test_a_good_upload_with_extra_fields_is_transcribed(stack: dict[str, Any]) -> None:
    for base in (stack["transcription"], stack["gateway"]):
        resp = await stack["client"].post(base + "/v1/audio/transcriptions", files={"file": ("a.wav", wav_bytes())},
                                          data={"unknown_field": "x", "language": "EN"})
        assert resp.status_code == 200, resp.text
        assert resp.json()["text"]


@pytest.mark.parametrize(("case", "kwargs", "status", "code", "param"),
                         [c for c in AUDIO_CASES if c[0] not in ("json body", "text body")],
                         ids=[c[0] for c in AUDIO_CASES if c[0] not in ("json body", "text body")])
async def test_bad_uploads_through_the_gateway(stack: dict[str, Any], case: str, kwargs: dict[str, Any],
                                               status: int, code: str, param: str | None) -> None:
    resp = await stack["client"].post(stack["gateway"] + "/v1/audio/transcriptions", **kwargs)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"


async def test_gateway_non_multipart_audio_body_is_415(stack: dict[str, Any]) -> None:
    resp = await stack["client"].post(stack["gateway"] + "/v1/audio/transcriptions", json={"file": "x"})
    assert_invalid_request(resp, 415, code="unsupported_media_type")


async def test_gateway_streamed_request_with_a_non_object_stream_options_is_400(stack: dict[str, Any]) -> None:
    resp = await stack["client"].post(stack["gateway"] + "/v1/chat/completions",
                                      json={**CHAT, "stream": True, "stream_options": "x"})
    assert_invalid_request(resp, 400, code="invalid_value", param="stream_options")
