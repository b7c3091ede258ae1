"""Sound to upload: a real WAV made here, so no audio file needs to ship with the tests."""

from __future__ import annotations

import io
import math
import struct
import wave


def tone_wav(seconds: float = 2.0, rate: int = 8000) -> bytes:
    """A 440 Hz tone as 16-bit mono WAV (another rate than Whisper's, so resampling is exercised)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        frames = (int(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(int(seconds * rate)))
        w.writeframes(b"".join(struct.pack("<h", f) for f in frames))
    return buf.getvalue()
