"""Upload bytes -> 16 kHz mono float32 samples, decoded in-process with PyAV (no ffmpeg binary).

Every failure is the client's: bytes that no demuxer recognises, a file without an audio stream, or
one that decodes to nothing are a 400 ``invalid_audio``; audio longer than the limit is a 400
``audio_too_long``, noticed while decoding so a huge file is never decoded to the end. Blocking:
callers run it in a thread.
"""

from __future__ import annotations

import io

import numpy as np

from common.errors import InvalidRequestError
from model_service.engines.speech import SAMPLE_RATE


def decode_audio(data: bytes, max_seconds: float) -> np.ndarray:
    """The samples of the first audio stream, resampled to mono 16 kHz float32 in [-1, 1]."""
    import av

    if not data:
        raise _invalid("The audio file is empty.")
    limit = int(max_seconds * SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise _invalid("The file has no audio stream.")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    samples = out.to_ndarray().reshape(-1)
                    chunks.append(samples)
                    total += samples.size
                if total > limit:
                    raise InvalidRequestError(
                        f"The audio is longer than the limit of {max_seconds:g} seconds.",
                        param="file", code="audio_too_long")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except InvalidRequestError:
        raise
    except (av.FFmpegError, ValueError, IndexError, OSError) as exc:
        raise _invalid(f"The file could not be decoded as audio ({type(exc).__name__}).") from None
    if not chunks or sum(c.size for c in chunks) == 0:
        raise _invalid("The file contains no audio samples.")
    return np.concatenate(chunks).astype(np.float32) / 32768.0


def _invalid(message: str) -> InvalidRequestError:
    return InvalidRequestError(message, param="file", code="invalid_audio")
