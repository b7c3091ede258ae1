"""The gateway in front of fake-engine transcription workers: multipart routing, defaults, failover."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from gateway.multipart import parse_form
from tests.helpers.audio import tone_wav
from tests.helpers.http import assert_error
from tests.helpers.servers import gateway
from tests.helpers.workers import worker

FILES = {"file": ("speech.wav", tone_wav(1.0), "audio/wav")}


@pytest.fixture
async def audio_stack() -> AsyncIterator[dict[str, Any]]:
    """A transcription worker, a chat worker, and the gateway (with a small body limit)."""
    async with AsyncExitStack() as stack:
        stt = await stack.enter_async_context(worker("whisper", "transcription"))
        chat = await stack.enter_async_context(worker("chat", "llm"))
        url, state = await stack.enter_async_context(
            gateway([stt[0], chat[0]], ordered=True, max_body_bytes=200_000))
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=15, trust_env=False))
        yield {"client": client, "state": state}


async def test_transcription_routes_by_form_model_and_default(audio_stack: dict[str, Any]) -> None:
    client = audio_stack["client"]
    for data in ({"model": "whisper"}, {}, {"model": "", "response_format": "verbose_json"}):
        resp = await client.post("/v1/audio/transcriptions", data=data, files=FILES)
        assert resp.status_code == 200, resp.text
        assert resp.json()["text"].startswith("Fake transcription of 1.00 seconds")
    srt = await client.post("/v1/audio/translations", data={"response_format": "srt"}, files=FILES)
    assert srt.status_code == 200 and srt.text.startswith("1\n00:00:00,000 --> ")
    assert srt.headers["content-type"].startswith("text/plain")
    cards = {c["id"]: c for c in (await client.get("/v1/models")).json()["data"]}
    assert cards["whisper"]["capabilities"] == ["transcription"]


async def test_transcription_errors(audio_stack: dict[str, Any]) -> None:
    client = audio_stack["client"]
    assert_error(await client.post("/v1/audio/transcriptions", data={"model": "nope"}, files=FILES),
                 404, "model_not_found")
    assert_error(await client.post("/v1/audio/transcriptions", data={"model": "chat"}, files=FILES),
                 400, "model_not_supported")
    assert_error(await client.post("/v1/audio/transcriptions", json={"model": "whisper"}), 415,
                 "unsupported_media_type")
    text = {"file": ("notes.txt", b"not audio at all\n" * 50, "text/plain")}
    assert_error(await client.post("/v1/audio/transcriptions", files=text), 400, "invalid_audio")
    big = {"file": ("big.wav", tone_wav(20.0), "audio/wav")}
    assert_error(await client.post("/v1/audio/transcriptions", files=big), 413, "payload_too_large")


async def test_failover_to_a_live_transcription_replica() -> None:
    """A replica that went away after the probe is skipped before the first byte; the upload is resent."""
    async with AsyncExitStack() as stack, AsyncExitStack() as doomed:
        gone = await doomed.enter_async_context(worker("whisper", "transcription"))
        good = await stack.enter_async_context(worker("whisper", "transcription"))
        url, state = await stack.enter_async_context(gateway([gone[0], good[0]], ordered=True))
        assert all(r.healthy for r in state.upstreams.snapshot.replicas)
        await doomed.aclose()
        async with httpx.AsyncClient(base_url=url, timeout=15, trust_env=False) as client:
            resp = await client.post("/v1/audio/transcriptions", data={"model": "whisper"}, files=FILES)
        assert resp.status_code == 200, resp.text
        assert state.metrics.served[good[0]] == 1


def test_multipart_model_is_read_and_rewritten() -> None:
    request = httpx.Request("POST", "http://x", data={"model": "a", "language": "en"}, files=FILES)
    raw, ctype = request.read(), request.headers["content-type"]
    form = parse_form(raw, ctype)
    assert form == {"model": "a", "language": "en"}
    renamed = parse_form(form.body_with_model(raw, "b/c"), ctype)
    assert renamed == {"language": "en", "model": "b/c"}
    assert form.body_with_model(raw, "b/c").count(tone_wav(1.0)) == 1
