"""The fake engine's constrained decoding: the same llguidance matcher as the real engines, over a
vocabulary of the 256 bytes plus end-of-sequence, so tests without a model still exercise real
grammars (tool calls, ``response_format``) end to end.

The fake "model" prefers to finish: at every step it ends if the grammar allows, else closes what is
open (the string it is in, else an object or array), else takes the first byte the grammar allows,
so it writes a short valid instance (``{}``, ``""``, ``0``, the required keys with minimal values).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch

from model_service.engines.constrained import Matcher

_EOS = 256


def _order(preferred: bytes) -> list[int]:
    return [*preferred, *(b for b in range(32, 127) if b not in preferred), *range(32), *range(127, 256)]


_IN_VALUE = _order(b'}]"0ntf{[a')  # close, then the shortest values
_IN_STRING = _order(b'"a')


class _ByteVocabulary:
    """What ``llguidance.TokenizerWrapper`` reads from a tokenizer."""

    eos_token_id = _EOS
    bos_token_id = None
    tokens = [bytes([b]) for b in range(256)] + [b"<eos>"]
    special_token_ids = [_EOS]

    def __call__(self, text: bytes) -> list[int]:
        return list(text)


class _ByteGrammarTokenizer:
    """``constrained.GrammarTokenizer``'s interface over the byte vocabulary."""

    def get(self) -> Any:
        return _byte_tokenizer()


@cache
def _byte_tokenizer() -> Any:
    import llguidance

    return llguidance.LLTokenizer(llguidance.TokenizerWrapper(_ByteVocabulary()))


def constrained_answer(grammar: str, limit: int) -> list[str]:
    """At most ``limit`` one-character pieces of text that the grammar accepts (cut short at the limit)."""
    matcher = Matcher(_ByteGrammarTokenizer(), grammar)  # type: ignore[arg-type]
    pieces: list[str] = []
    in_string = False
    while len(pieces) < limit and not matcher.complete:
        allowed = torch.isfinite(matcher.mask(torch.zeros(_EOS + 1)))
        if allowed[_EOS]:
            break
        byte = next(b for b in (_IN_STRING if in_string else _IN_VALUE) if allowed[b])
        in_string ^= byte == ord('"')  # the fake never writes escapes, so every quote opens or closes
        matcher.accept(byte)
        pieces.append(chr(byte))
    return pieces
