"""What a speech engine is asked and what it answers, independent of the library behind it.

The fields follow OpenAI's ``verbose_json`` transcription (segments with seek, tokens, logprob and
compression figures; words with times), so the route only formats; engines that cannot measure a
figure leave its neutral value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SAMPLE_RATE = 16_000  # Whisper's input rate: every engine receives mono float32 samples at this rate


@dataclass(frozen=True)
class TranscribeParams:
    task: Literal["transcribe", "translate"] = "transcribe"
    language: str | None = None  # ISO 639-1 code; None = detect
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False


@dataclass
class Word:
    word: str
    start: float
    end: float


@dataclass
class Segment:
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int] = field(default_factory=list)
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 1.0
    no_speech_prob: float = 0.0


@dataclass
class Transcription:
    text: str
    language: str  # ISO 639-1 code as detected or given
    duration: float  # seconds of audio
    segments: list[Segment] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)


def fake_transcription(samples: int, params: TranscribeParams) -> Transcription:
    """The fake engine's answer: a sentence naming the task and the audio length, as two segments
    (so subtitle formats show more than one cue), with evenly spread word times when asked."""
    duration = round(samples / SAMPLE_RATE, 2)
    task = "translation" if params.task == "translate" else "transcription"
    texts = [f" Fake {task} of {duration:.2f} seconds.", " " + (params.prompt or "Nothing else was said.")]
    half = round(duration / 2, 2)
    segments = [Segment(id=i, seek=0, start=start, end=end, text=text, tokens=list(range(1, len(text.split()) + 1)))
                for i, (text, start, end) in enumerate(zip(texts, (0.0, half), (half, duration), strict=True))]
    words: list[Word] = []
    if params.word_timestamps:
        for seg in segments:
            pieces = seg.text.split()
            step = (seg.end - seg.start) / max(len(pieces), 1)
            words += [Word(w, round(seg.start + i * step, 2), round(seg.start + (i + 1) * step, 2))
                      for i, w in enumerate(pieces)]
    return Transcription(text="".join(s.text for s in segments).strip(), language=params.language or "en",
                         duration=duration, segments=segments, words=words)
