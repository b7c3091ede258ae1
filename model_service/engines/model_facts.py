"""Facts read off a loaded transformers model that every generating engine needs the same way.

Shared by the text engine and the vision engine (whose language model carries the same config
fields), so the two can never disagree on where a context length or an end-of-sequence id comes from.
"""

from __future__ import annotations

from typing import Any


def context_length(config: Any, tokenizer: Any) -> int:
    """The model's context length: the first length-like config field, else the tokenizer's limit
    when it is a real one (tokenizers without a limit report a huge sentinel), else 2048."""
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 10**7 else 2048


def eos_ids(generation_config: Any, tokenizer: Any) -> set[int]:
    """Every token id that ends a sequence: the generation config's (one or a list) and the tokenizer's."""
    ids: set[int] = set()
    for value in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(v for v in value if isinstance(v, int))
    return ids
