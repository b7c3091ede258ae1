"""A ``speech.Transcription`` in each of OpenAI's ``response_format``s, byte for byte the same shapes.

``json`` is ``{"text"}``; ``verbose_json`` adds task, language (the English name, as OpenAI writes
it), duration, segments and, when word granularity was asked for, words; ``text`` is the plain text;
``srt``/``vtt`` are subtitle files with one cue per segment.
"""

from __future__ import annotations

import functools
from dataclasses import asdict
from typing import Any

from fastapi.responses import JSONResponse, PlainTextResponse, Response

from model_service.engines.speech import Transcription


@functools.cache
def _language_names() -> dict[str, str]:
    try:
        from transformers.models.whisper.tokenization_whisper import LANGUAGES
    except ImportError:  # a worker image without transformers still answers, with the code
        return {}
    return dict(LANGUAGES)


def language_name(code: str) -> str:
    return _language_names().get(code, code)


def verbose_json(result: Transcription, task: str, granularities: set[str]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": task, "language": language_name(result.language), "duration": result.duration,
        "text": result.text,
    }
    if "segment" in granularities or "word" not in granularities:
        body["segments"] = [asdict(s) for s in result.segments]
    if "word" in granularities:
        body["words"] = [asdict(w) for w in result.words]
    return body


def _stamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{ms:03d}"


def srt(result: Transcription) -> str:
    return "".join(f"{i}\n{_stamp(s.start, ',')} --> {_stamp(s.end, ',')}\n{s.text.strip()}\n\n"
                   for i, s in enumerate(result.segments, start=1))


def vtt(result: Transcription) -> str:
    cues = "".join(f"{_stamp(s.start, '.')} --> {_stamp(s.end, '.')}\n{s.text.strip()}\n\n" for s in result.segments)
    return "WEBVTT\n\n" + cues


def render(result: Transcription, response_format: str, task: str, granularities: set[str]) -> Response:
    if response_format == "text":
        return PlainTextResponse(result.text + "\n")
    if response_format == "srt":
        return PlainTextResponse(srt(result))
    if response_format == "vtt":
        return PlainTextResponse(vtt(result), media_type="text/vtt")
    if response_format == "verbose_json":
        return JSONResponse(verbose_json(result, task, granularities))
    return JSONResponse({"text": result.text})
