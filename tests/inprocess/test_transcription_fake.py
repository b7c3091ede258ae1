"""The transcription worker's HTTP layer with the fake engine: every response_format, the errors."""

from __future__ import annotations

import asyncio

from tests.helpers.audio import tone_wav
from tests.helpers.http import assert_error

TRANSCRIBE = "/v1/audio/transcriptions"
TRANSLATE = "/v1/audio/translations"


def fake(worker_client, **kw):
    return worker_client(model_type="transcription", model_name="whisper", **kw)


async def post(client, data=None, audio=None, path=TRANSCRIBE, name="speech.wav"):
    audio = tone_wav() if audio is None else audio
    return await client.post(path, data=data or {}, files={"file": (name, audio, "audio/wav")})


async def test_json_text_and_verbose_json(worker_client):
    async with fake(worker_client) as client:
        plain = await post(client, {"model": "whisper"})
        assert plain.status_code == 200, plain.text
        assert plain.json() == {"text": "Fake transcription of 2.00 seconds. Nothing else was said."}
        text = await post(client, {"response_format": "text"})
        assert text.headers["content-type"].startswith("text/plain")
        assert text.text == "Fake transcription of 2.00 seconds. Nothing else was said.\n"
        verbose = (await post(client, {"response_format": "verbose_json", "language": "de"})).json()
        assert set(verbose) == {"task", "language", "duration", "text", "segments"}
        assert verbose["task"] == "transcribe" and verbose["language"] == "german"
        assert verbose["duration"] == 2.0
        first = verbose["segments"][0]
        assert set(first) == {"id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob",
                              "compression_ratio", "no_speech_prob"}
        assert first["id"] == 0 and first["end"] == 1.0


async def test_word_timestamps(worker_client):
    async with fake(worker_client) as client:
        data = {"response_format": "verbose_json", "timestamp_granularities[]": ["word", "segment"]}
        body = (await post(client, data)).json()
        assert [w["word"] for w in body["words"]][:3] == ["Fake", "transcription", "of"]
        assert set(body["words"][0]) == {"word", "start", "end"} and len(body["segments"]) == 2
        words_only = (await post(client, {**data, "timestamp_granularities[]": "word"})).json()
        assert "words" in words_only and "segments" not in words_only
        assert_error(await post(client, {"timestamp_granularities[]": "word"}), 400, "invalid_value")


async def test_srt_and_vtt(worker_client):
    async with fake(worker_client) as client:
        srt = await post(client, {"response_format": "srt", "prompt": "Hello there."})
        assert srt.headers["content-type"].startswith("text/plain")
        assert srt.text == ("1\n00:00:00,000 --> 00:00:01,000\nFake transcription of 2.00 seconds.\n\n"
                            "2\n00:00:01,000 --> 00:00:02,000\nHello there.\n\n")
        vtt = await post(client, {"response_format": "vtt"})
        assert vtt.headers["content-type"].startswith("text/vtt")
        assert vtt.text.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nFake transcription")


async def test_translation(worker_client):
    async with fake(worker_client) as client:
        resp = await post(client, {"response_format": "verbose_json"}, path=TRANSLATE)
        assert resp.status_code == 200, resp.text
        assert resp.json()["task"] == "translate" and resp.json()["text"].startswith("Fake translation")


async def test_bad_uploads_are_400_or_413(worker_client):
    async with fake(worker_client, max_audio_bytes=40_000, max_audio_seconds=5) as client:
        err = assert_error(await post(client, audio=b"just some text, not audio\n" * 20, name="a.txt"),
                           400, "invalid_audio", "file")
        assert "decoded" in err["message"]
        assert_error(await post(client, audio=b""), 400, "invalid_audio")
        assert_error(await post(client, audio=tone_wav(seconds=3.0)), 413, "payload_too_large")
        assert_error(await post(client, audio=tone_wav(8.0, rate=2000)),
                     400, "audio_too_long")
        assert_error(await client.post(TRANSCRIBE, data={"model": "whisper"}), 400)  # no file
        assert_error(await post(client, {"response_format": "xml"}), 400, param="response_format")


async def test_wrong_model_and_wrong_worker(worker_client):
    async with fake(worker_client) as client:
        assert_error(await post(client, {"model": "other"}), 404, "model_not_found", "model")
    async with worker_client(model_type="llm", model_name="chat") as client:
        assert_error(await post(client), 400, "unsupported_endpoint")
    async with worker_client(model_type="transcription", model_name="whisper") as client:
        models = (await client.get("/v1/models")).json()["data"]
        assert models[0]["type"] == "transcription" and models[0]["capabilities"] == ["transcription"]


async def test_full_queue_answers_429(worker_client):
    async with fake(worker_client, max_queue=0, fake_token_delay_s=0.5) as client:
        first = asyncio.create_task(post(client))
        await asyncio.sleep(0.2)
        assert_error(await post(client), 429, "overloaded")
        assert (await first).status_code == 200
        assert (await client.get("/health")).status_code == 200
