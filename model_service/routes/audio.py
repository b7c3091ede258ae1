"""``POST /v1/audio/transcriptions`` and ``/v1/audio/translations``: OpenAI's multipart uploads.

The upload is bounded twice: its bytes (``max_audio_bytes``, 413) and its decoded length
(``max_audio_seconds``, 400). Decoding and transcription are CPU/GPU work, so both run in a thread
while holding an admission slot: a full queue answers 429 at once and the event loop keeps serving
``/health`` meanwhile.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response

from common.errors import InvalidRequestError, PayloadTooLargeError
from model_service.audio import decode_audio
from model_service.deps import EngineDep, WorkerDep, check_request
from model_service.engines.base import Engine
from model_service.engines.speech import TranscribeParams
from model_service.transcripts import render
from model_service.worker import Worker

router = APIRouter()

ResponseFormat = Literal["json", "text", "verbose_json", "srt", "vtt"]
Granularity = Literal["segment", "word"]
# The languages Whisper knows (ISO 639-1, plus Hawaiian and Cantonese); checked here so an unknown code
# is a 400 for every engine rather than an engine's exception.
WHISPER_LANGUAGES = frozenset(
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw he hi hr ht "
    "hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my ne nl nn no oc pa pl "
    "ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz vi yi yo zh yue".split())


@router.post("/v1/audio/transcriptions")
async def transcriptions(
    worker: WorkerDep,
    engine: EngineDep,
    file: Annotated[UploadFile, File()],
    model: Annotated[str | None, Form()] = None,
    language: Annotated[str | None, Form()] = None,
    prompt: Annotated[str | None, Form()] = None,
    response_format: Annotated[ResponseFormat, Form()] = "json",
    temperature: Annotated[float, Form(ge=0.0, le=1.0)] = 0.0,
    granularities: Annotated[list[Granularity] | None, Form(alias="timestamp_granularities[]")] = None,
) -> Response:
    check_request(worker, model, "transcription", "audio transcriptions")
    wanted = set(granularities or [])
    if wanted and response_format != "verbose_json":
        raise InvalidRequestError("'timestamp_granularities' needs response_format 'verbose_json'.",
                                  param="timestamp_granularities", code="invalid_value")
    params = TranscribeParams(task="transcribe", language=_language(language), prompt=prompt,
                              temperature=temperature, word_timestamps="word" in wanted)
    return await _run(worker, engine, file, params, response_format, wanted)


@router.post("/v1/audio/translations")
async def translations(
    worker: WorkerDep,
    engine: EngineDep,
    file: Annotated[UploadFile, File()],
    model: Annotated[str | None, Form()] = None,
    prompt: Annotated[str | None, Form()] = None,
    response_format: Annotated[ResponseFormat, Form()] = "json",
    temperature: Annotated[float, Form(ge=0.0, le=1.0)] = 0.0,
) -> Response:
    """Speech in any language to English text (Whisper's ``translate`` task)."""
    check_request(worker, model, "transcription", "audio translations")
    params = TranscribeParams(task="translate", prompt=prompt, temperature=temperature)
    return await _run(worker, engine, file, params, response_format, set())


def _language(value: str | None) -> str | None:
    code = (value or "").strip().lower() or None
    if code is not None and code not in WHISPER_LANGUAGES:
        raise InvalidRequestError(f"Unknown language {code[:16]!r}: use an ISO 639-1 code such as 'en'.",
                                  param="language", code="invalid_value")
    return code


async def _run(worker: Worker, engine: Engine, file: UploadFile, params: TranscribeParams,
               response_format: str, granularities: set[str]) -> Response:
    data = await _read_upload(file, worker.settings.max_audio_bytes)
    async with worker.admission.slot():
        audio = await asyncio.to_thread(decode_audio, data, worker.settings.max_audio_seconds)
        result = await asyncio.to_thread(engine.transcribe, audio, params)
    return render(result, response_format, params.task, granularities)


async def _read_upload(file: UploadFile, limit: int) -> bytes:
    """The uploaded bytes, refusing more than ``limit`` without reading them all into memory."""
    if file.size is not None and file.size > limit:
        raise _too_large(limit)
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise _too_large(limit)
    return data


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"The audio file is larger than the limit of {limit} bytes.", param="file")
