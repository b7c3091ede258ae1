"""Embedding post-processing as OpenAI defines it: ``dimensions`` and ``encoding_format``.

Shortening keeps the first ``dimensions`` values and renormalises to unit length (what OpenAI does
for its Matryoshka models); base64 is the little-endian float32 bytes of the vector.
"""

from __future__ import annotations

import base64
import math
import struct

from common.errors import InvalidRequestError


def check_dimensions(dimensions: int | None, native: int) -> None:
    """A size above the model's own cannot be made up: a 400 naming ``dimensions``."""
    if dimensions is not None and dimensions > native:
        raise InvalidRequestError(
            f"'dimensions' must be at most {native} for this model (got {dimensions}).",
            param="dimensions", code="invalid_value",
        )


def check_matryoshka(dimensions: int | None, native: int, declared: tuple[int, ...] | None, setting: str) -> None:
    """Cutting a vector is only sound for a model trained for it (Matryoshka): refused for others, as
    vLLM does, unless the operator says otherwise (``WORKER_EMBEDDING_MATRYOSHKA``); a model that lists
    its sizes takes only those. Asking for the native size cuts nothing and is always fine."""
    check_dimensions(dimensions, native)
    if dimensions is None or dimensions == native or setting == "on":
        return
    if setting == "off" or declared is None:
        raise InvalidRequestError(
            "This model does not support 'dimensions' (it was not trained to be shortened, Matryoshka-style); "
            f"leave it out to get {native} dimensions.", param="dimensions", code="unsupported_parameter")
    if declared and dimensions not in declared:
        raise InvalidRequestError(
            f"'dimensions' must be one of {sorted(declared)} for this model (got {dimensions}).",
            param="dimensions", code="invalid_value")


def shorten(vector: list[float], dimensions: int | None, native: int) -> list[float]:
    """Cut to ``dimensions`` and renormalise to unit length."""
    check_dimensions(dimensions, native)
    if dimensions is None or dimensions >= len(vector):
        return vector
    cut = vector[:dimensions]
    norm = math.sqrt(sum(v * v for v in cut))
    return [v / norm for v in cut] if norm > 0 else cut


def to_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def from_base64(data: str) -> list[float]:
    raw = base64.b64decode(data)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))
