"""The transformers Whisper engine on a tiny random Hugging Face Whisper folder (``tests/helpers/whisper.py``).

The weights are random, so the words are gibberish: these tests check that the real engine loads a
normal Hugging Face Whisper folder and answers the worker's transcription shapes (text, ordered
segment times inside the audio, every response format) for real speech, and what it refuses.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from model_service.engines.whisper import build_whisper_engine, folder_kind
from model_service.engines.whisper_hf import TransformersWhisperEngine
from model_service.settings import WorkerSettings
from tests.helpers.http import assert_error
from tests.helpers.workers import worker_client_for

TRANSCRIBE = "/v1/audio/transcriptions"
SRT_TIME = re.compile(r"^\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}$")
VTT_TIME = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}$")


def settings(path: Path) -> WorkerSettings:
    return WorkerSettings(_env_file=None, model_name="whisper-tiny-hf", model_type="transcription",
                          model_path=str(path), whisper_beam_size=1)


@pytest.fixture(scope="module")
def hf_engine(tiny_whisper_hf_path: Path):
    engine = build_whisper_engine(settings(tiny_whisper_hf_path))
    engine.load()
    yield engine
    engine.close()


def test_folder_detection_picks_transformers(tiny_whisper_hf_path: Path, tmp_path: Path) -> None:
    assert folder_kind(tiny_whisper_hf_path) == "transformers"  # as transformers 5 saves it
    hub = tmp_path / "whisper-base"  # as the hub ships it
    hub.mkdir()
    for name in ("model.safetensors", "preprocessor_config.json", "config.json"):
        (hub / name).write_text("{}")
    assert folder_kind(hub) == "transformers"
    assert isinstance(build_whisper_engine(settings(hub)), TransformersWhisperEngine)
    (hub / "preprocessor_config.json").unlink()
    with pytest.raises(ValueError, match="neither"):
        folder_kind(hub)


def check_segments(body: dict) -> None:
    assert isinstance(body["text"], str) and body["segments"]
    previous = 0.0
    for i, seg in enumerate(body["segments"]):
        assert seg["id"] == i and 0.0 <= previous <= seg["start"] <= seg["end"] <= body["duration"]
        assert seg["tokens"] and isinstance(seg["text"], str)
        previous = seg["start"]


async def test_tiny_whisper_in_every_format(tiny_whisper_hf_path: Path, hf_engine, speech_bytes: bytes) -> None:
    audio = speech_bytes
    assert hf_engine.name == "transformers-whisper"
    async with worker_client_for(settings(tiny_whisper_hf_path), engine=hf_engine) as client:

        async def post(path: str = TRANSCRIBE, **data):
            return await client.post(path, data=data, files={"file": ("fox.wav", audio, "audio/wav")})

        plain = await post(model="whisper-tiny-hf")
        assert plain.status_code == 200, plain.text
        assert set(plain.json()) == {"text"} and isinstance(plain.json()["text"], str)
        verbose = await post(response_format="verbose_json", language="en")
        body = verbose.json()
        assert body["task"] == "transcribe" and body["language"] == "english" and 2.0 < body["duration"] < 4.0
        check_segments(body)
        text = await post(response_format="text", language="en")
        assert text.text == body["text"] + "\n"  # greedy: the same words every time
        srt = (await post(response_format="srt", language="en")).text.strip().split("\n\n")
        assert len(srt) == len(body["segments"])
        for i, cue in enumerate(srt, start=1):
            lines = cue.split("\n")
            assert lines[0] == str(i) and SRT_TIME.match(lines[1])
        vtt = await post(response_format="vtt", language="en")
        assert vtt.headers["content-type"].startswith("text/vtt") and vtt.text.startswith("WEBVTT\n\n")
        assert all(VTT_TIME.match(cue.split("\n")[0]) for cue in vtt.text.strip().split("\n\n")[1:])
        # Translation, a prompt and sampling go through generate's own arguments.
        english = await post("/v1/audio/translations", response_format="verbose_json", prompt="Foxes and dogs.",
                             temperature="0.5")
        assert english.status_code == 200, english.text
        assert json.loads(english.text)["task"] == "translate"
        check_segments(english.json())
        words = await post(response_format="verbose_json", **{"timestamp_granularities[]": ["word"]})
        assert_error(words, 400, "unsupported", param="timestamp_granularities")
        assert_error(await post(language="xx"), 400, "invalid_value", param="language")


def test_long_audio_is_decoded_window_after_window(hf_engine, speech_bytes: bytes) -> None:
    import numpy as np

    from model_service.audio import decode_audio
    from model_service.engines.speech import TranscribeParams

    speech = decode_audio(speech_bytes, 600)
    audio = np.tile(speech, int(40 * 16_000 / len(speech)) + 1)  # past one 30 s window: long-form
    result = hf_engine.transcribe(audio, TranscribeParams(language="en"))
    assert result.duration > 40 and result.segments
    assert all(0.0 <= s.start <= s.end <= result.duration for s in result.segments)
    assert [s.start for s in result.segments] == sorted(s.start for s in result.segments)
