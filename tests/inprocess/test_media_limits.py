"""The upload limits a worker advertises are the ones that apply: no smaller body cap in front of them.

With default settings the gateway passes a 20 MiB audio file and a 12 MiB image (16 MiB as base64
JSON) to the worker, whose own media limit answers a file just over it with 413; the 8 MiB cap of
text workers is unchanged.
"""

from __future__ import annotations

import base64
import io
import wave
from contextlib import AsyncExitStack

import httpx
import numpy as np
from PIL import Image

from model_service.settings import MEDIA_BODY_MARGIN, WorkerSettings
from tests.helpers.http import assert_error
from tests.helpers.servers import gateway
from tests.helpers.vision import image_message
from tests.helpers.workers import worker

MiB = 1024 * 1024


def noise_wav(n_bytes: int, rate: int = 16000) -> bytes:
    """A 16-bit mono WAV of about ``n_bytes``, quick to build at any size."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.random.default_rng(0).integers(-3000, 3000, n_bytes // 2, dtype=np.int16).tobytes())
    return buf.getvalue()


def test_media_workers_raise_their_body_cap_to_their_upload_limit() -> None:
    base = {"_env_file": None}
    assert WorkerSettings(**base, model_type="llm").max_body_bytes == 8 * MiB
    stt = WorkerSettings(**base, model_type="transcription")
    assert stt.max_body_bytes == stt.max_audio_bytes + MEDIA_BODY_MARGIN
    vision = WorkerSettings(**base, model_type="multimodal", max_image_bytes=9 * MiB)
    assert vision.max_body_bytes == 12 * MiB + MEDIA_BODY_MARGIN
    assert WorkerSettings(**base, model_type="transcription", max_body_bytes=MiB).max_body_bytes == MiB


async def test_large_uploads_reach_the_worker_through_a_default_gateway() -> None:
    async with AsyncExitStack() as stack:
        stt, _ = await stack.enter_async_context(worker("whisper", "transcription", max_audio_bytes=21 * MiB))
        eyes, _ = await stack.enter_async_context(worker("eyes", "multimodal"))
        url, _ = await stack.enter_async_context(gateway([stt, eyes]))
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=60, trust_env=False))

        audio = noise_wav(20 * MiB)
        resp = await client.post("/v1/audio/transcriptions", data={"model": "whisper"},
                                 files={"file": ("long.wav", audio, "audio/wav")})
        assert resp.status_code == 200, resp.text
        assert resp.json()["text"].startswith("Fake transcription of 655.36 seconds")
        over = noise_wav(22 * MiB)
        assert_error(await client.post("/v1/audio/transcriptions", data={"model": "whisper"},
                                       files={"file": ("longer.wav", over, "audio/wav")}), 413, "payload_too_large")

        pixels = np.random.default_rng(1).integers(0, 256, (2000, 2000, 3), dtype=np.uint8)
        png = io.BytesIO()
        Image.fromarray(pixels).save(png, format="PNG", compress_level=0)
        assert png.tell() > 11 * MiB
        data_url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
        body = {"model": "eyes", "temperature": 0, "messages": [image_message("what", data_url)]}
        resp = await client.post("/v1/chat/completions", json=body)
        assert resp.status_code == 200, resp.text
        assert resp.json()["choices"][0]["message"]["content"] == "what [image 2000x2000]"
