"""The left-padded batch KV cache: padding, positions, joining rows and trimming dead columns."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from model_service.engines.llm_batch import KVBatch, left_pad, positions
from model_service.settings import WorkerSettings


def fake_cache(rows: int, length: int, fill: float) -> SimpleNamespace:
    """Two layers of ``[rows, heads=1, length, dim=2]`` keys/values, like DynamicCache's layers."""
    layer = lambda: SimpleNamespace(keys=torch.full((rows, 1, length, 2), fill),  # noqa: E731
                                    values=torch.full((rows, 1, length, 2), -fill))
    return SimpleNamespace(layers=[layer(), layer()])


def test_left_pad_and_positions_skip_padding():
    ids, mask = left_pad([[5, 6, 7], [9]], pad_id=0, device="cpu")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 9]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions(mask).tolist() == [[0, 1, 2], [0, 0, 0]]


def test_join_pads_the_shorter_side_on_the_left():
    batch = KVBatch()
    batch.join(["a"], fake_cache(1, 2, 1.0), torch.ones(1, 2, dtype=torch.long))  # type: ignore[list-item]
    batch.join(["b", "c"], fake_cache(2, 4, 2.0), torch.ones(2, 4, dtype=torch.long))  # type: ignore[list-item]
    assert batch.rows == ["a", "b", "c"]
    assert batch.mask is not None and batch.mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]
    keys = batch.cache.layers[1].keys
    assert keys.shape == (3, 1, 4, 2)
    assert keys[0, 0, :, 0].tolist() == [0.0, 0.0, 1.0, 1.0]


def test_keep_drops_rows_and_trims_columns_that_are_padding_everywhere():
    batch = KVBatch()
    batch.join(["short"], fake_cache(1, 2, 1.0), torch.ones(1, 2, dtype=torch.long))  # type: ignore[list-item]
    batch.join(["long"], fake_cache(1, 5, 2.0), torch.ones(1, 5, dtype=torch.long))  # type: ignore[list-item]
    batch.keep([0])  # the long row leaves: three columns are now padding for every row
    assert batch.rows == ["short"]
    assert batch.mask is not None and batch.mask.tolist() == [[1, 1]]
    assert batch.cache.layers[0].values.shape == (1, 1, 2, 2)
    batch.keep([])
    assert len(batch) == 0 and batch.cache is None


def test_admission_follows_the_batch_size_unless_set():
    llm = WorkerSettings(_env_file=None, model_type="llm", max_batch_size=12)
    emb = WorkerSettings(_env_file=None, model_type="embedding", embedding_max_batch_size=48)
    fixed = WorkerSettings(_env_file=None, model_type="llm", max_batch_size=12, max_concurrency=3)
    assert (llm.engine_concurrency(), emb.engine_concurrency(), fixed.engine_concurrency()) == (12, 48, 3)
