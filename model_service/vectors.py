"""Embedding post-processing as OpenAI defines it: ``dimensions`` and ``encoding_format``, and the
response body written straight from the vectors.

Shortening keeps the first ``dimensions`` values and renormalises to unit length (what OpenAI does
for its Matryoshka models); base64 is the little-endian float32 bytes of the vector.

``embeddings_body`` is the whole response: at 64 clients, building pydantic models for every vector
and letting FastAPI validate and serialise them cost more than the encode itself. The body is built
by orjson from the float32 array (widened to float64, so each number prints exactly as the pydantic
path printed the same float32 value) and base64 straight from the array's buffer; the bytes are the
same as ``EmbeddingResponse(...).model_dump_json()`` gave (tests/inprocess/test_embeddings_body.py).
"""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import numpy as np
import orjson

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


def embeddings_body(vectors: Any, model: str, prompt_tokens: int, *, encoding_format: str = "float",
                    dimensions: int | None = None, native: int = 0) -> bytes:
    """The JSON bytes of an OpenAI embeddings response for ``vectors`` (a 2-D array or lists)."""
    rows: Any = np.asarray(vectors, dtype=np.float32)
    if dimensions is not None and dimensions < rows.shape[1]:  # the rare path: exactly as ``shorten`` does it
        rows = [np.asarray(shorten(row.tolist(), dimensions, native)) for row in rows]
    if encoding_format == "base64":
        data = [base64.b64encode(np.asarray(row, dtype="<f4").tobytes()).decode("ascii") for row in rows]
    else:
        data = [np.asarray(row, dtype=np.float64) for row in rows]
    return orjson.dumps({
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(data)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 0, "total_tokens": prompt_tokens},
    }, option=orjson.OPT_SERIALIZE_NUMPY)
