"""The transcription worker on the real whisper-base starter model (faster-whisper, int8 on CPU).

Speech made by espeak-ng comes back as the words spoken, in every response format; the engine is
loaded once per module and shared.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from model_service.engines.whisper import folder_kind
from model_service.settings import WorkerSettings
from tests.helpers.http import assert_error
from tests.helpers.workers import worker_client_for

TRANSCRIBE = "/v1/audio/transcriptions"


@pytest.fixture(scope="module")
def whisper_engine(whisper_path: Path):
    from model_service.engines import build_engine

    engine = build_engine(settings(whisper_path))
    engine.load()
    yield engine
    engine.close()


def settings(path: Path) -> WorkerSettings:
    return WorkerSettings(_env_file=None, model_name="whisper-base", model_type="transcription",
                          model_path=str(path), whisper_beam_size=1)


def spoken(text: str) -> None:
    low = text.lower()
    assert "quick" in low and "fox" in low and "lazy dog" in low, text


async def test_real_speech_in_every_format(whisper_path: Path, whisper_engine, speech_bytes: bytes) -> None:
    assert folder_kind(whisper_path) == "ctranslate2" and whisper_engine.name == "faster-whisper"
    audio = speech_bytes
    async with worker_client_for(settings(whisper_path), engine=whisper_engine) as client:

        async def post(**data):
            resp = await client.post(TRANSCRIBE, data=data, files={"file": ("fox.wav", audio, "audio/wav")})
            assert resp.status_code == 200, resp.text
            return resp

        spoken((await post(model="whisper-base")).json()["text"])
        verbose = (await post(response_format="verbose_json", language="en",
                              **{"timestamp_granularities[]": ["word", "segment"]})).json()
        spoken(verbose["text"])
        assert verbose["language"] == "english" and 2.0 < verbose["duration"] < 4.0
        assert verbose["segments"][0]["tokens"] and verbose["segments"][-1]["end"] <= verbose["duration"] + 0.1
        words = [w["word"].strip(" .").lower() for w in verbose["words"]]
        assert "fox" in words and all(w["start"] <= w["end"] for w in verbose["words"])
        srt = (await post(response_format="srt")).text
        first = srt.split("\n")
        assert first[0] == "1" and " --> " in first[1] and "," in first[1]
        spoken(srt)
        vtt = await post(response_format="vtt")
        assert vtt.text.startswith("WEBVTT\n\n") and vtt.headers["content-type"].startswith("text/vtt")
        english = (await client.post("/v1/audio/translations", files={"file": ("fox.wav", audio, "audio/wav")}))
        spoken(english.json()["text"])
        text_file = {"file": ("notes.txt", b"The quick brown fox, as text.\n" * 20, "text/plain")}
        assert_error(await client.post(TRANSCRIBE, files=text_file), 400, "invalid_audio")
