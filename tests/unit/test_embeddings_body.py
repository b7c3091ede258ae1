"""The embeddings response written as bytes (``vectors.embeddings_body``) is the very JSON the pydantic
path wrote before: the same keys in the same order and every float printed the same, for float and
base64, cut to ``dimensions`` or not."""

from __future__ import annotations

import numpy as np
import pytest

from common.responses import EmbeddingData, EmbeddingResponse, Usage
from model_service.vectors import embeddings_body, shorten, to_base64


def old_path(vectors: np.ndarray, model: str, tokens: int, encoding_format: str, dimensions: int | None) -> bytes:
    """What the route returned before: Python lists, ``shorten``/``to_base64``, a pydantic response
    serialised by FastAPI (pydantic's JSON)."""
    data = []
    for i, row in enumerate(vectors):
        vec = shorten(row.astype("float32").tolist(), dimensions, vectors.shape[1])
        data.append(EmbeddingData(index=i, embedding=to_base64(vec) if encoding_format == "base64" else vec))
    return EmbeddingResponse(data=data, model=model, usage=Usage.of(tokens)).model_dump_json().encode()


def vectors(rows: int, dims: int, seed: int) -> np.ndarray:
    """Unit vectors with the awkward values a real model gives too: tiny, zero, negative zero, large."""
    rng = np.random.default_rng(seed)
    out = rng.standard_normal((rows, dims)).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    out[0, :6] = [1e-7, -3.5e-5, 0.0, -0.0, 1e-4, 12345.678]
    return out


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
@pytest.mark.parametrize("dimensions", [None, 384, 64])
def test_same_bytes_as_the_pydantic_path(encoding_format: str, dimensions: int | None) -> None:
    for seed, rows in ((1, 1), (2, 3), (3, 32)):
        data = vectors(rows, 384, seed)
        new = embeddings_body(data, "minilm", 7 * rows, encoding_format=encoding_format, dimensions=dimensions,
                              native=384)
        assert new == old_path(data, "minilm", 7 * rows, encoding_format, dimensions)


def test_lists_are_taken_as_well_as_arrays() -> None:
    data = vectors(2, 8, 4)
    assert embeddings_body(data.tolist(), "m", 3) == embeddings_body(data, "m", 3) == old_path(data, "m", 3, "float",
                                                                                               None)
