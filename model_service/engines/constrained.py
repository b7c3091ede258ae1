"""Constrained decoding for the transformers engines: a grammar decides which tokens may come next.

The library is llguidance (the engine behind guidance, also used by vLLM and llama.cpp), chosen over
xgrammar for three reasons measured here: it installs as one self-contained wheel against the CPU
torch build (xgrammar pulls triton and a second FFI runtime), it needs no per-schema compilation
step (the mask for a fresh JSON Schema is computed lazily, ~1 ms a token on SmolLM2's vocabulary,
so every request may bring its own schema), and it reports an unsupported schema keyword by name
("Unimplemented keys: ["if"]"), which becomes the client's 400.

It fits our own continuous-batching scheduler row by row: each ``Sequence`` with a grammar owns one
``Matcher``; before sampling, that row's logits are masked with the grammar's token bitmask; after
sampling, the matcher consumes the chosen token. Rows with and without grammars share a batch,
because masking happens on each row's own logits. A row finishes when the grammar is complete
(end-of-sequence is the only token it allows then, so we end without spending a step on it).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from common.errors import InvalidRequestError

if TYPE_CHECKING:  # the grammar builders serve the worker's routes, which do not load torch
    import torch

# One canonical spelling, `{"a": 1, "b": 2}`: the spacing models saw most, and no free whitespace to
# wander in.
_FLAT_JSON = {"whitespace_flexible": False, "key_separator": ": ", "item_separator": ", "}


def json_schema_grammar(schema: dict[str, Any], param: str) -> str:
    """The grammar for JSON that validates against ``schema``; a 400 naming ``param`` and the
    unsupported feature when llguidance cannot enforce the schema exactly."""
    import llguidance

    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=_FLAT_JSON)
    except ValueError as exc:
        raise InvalidRequestError(f"Invalid JSON Schema in '{param}': {exc}", param=param,
                                  code="invalid_schema") from exc
    problem = llguidance.LLMatcher.validate_grammar(grammar)
    if problem:
        raise InvalidRequestError(f"The JSON Schema in '{param}' uses a feature structured outputs do not "
                                  f"support: {problem}", param=param, code="unsupported_schema")
    return grammar


class GrammarError(RuntimeError):
    """The matcher failed mid-sequence (a resource limit, or a token it did not allow): that row ends
    with this error, the rest of the batch goes on."""


class GrammarTokenizer:
    """The model's vocabulary as llguidance sees it, built once on first use (about a second for a
    50k vocabulary), so engines that never get a grammar never pay for it."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: set[int]) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._eos_ids = sorted(eos_ids)
        self._built: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if self._built is None:
                import llguidance.hf

                self._built = llguidance.hf.from_tokenizer(self._tokenizer, n_vocab=self._vocab_size,
                                                           eos_token=self._eos_ids or None)
            return self._built


class Matcher:
    """One sequence's grammar state: masks its logits, follows its tokens."""

    def __init__(self, tokenizer: GrammarTokenizer, grammar: str) -> None:
        import llguidance

        self._matcher = llguidance.LLMatcher(tokenizer.get(), grammar, log_level=0)
        self._check()

    def mask(self, scores: torch.Tensor) -> torch.Tensor:
        """``scores`` (1-D) with every token the grammar forbids at -inf (a new tensor)."""
        bits = np.unpackbits(np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
        self._check()
        width = scores.shape[-1]
        allowed = np.zeros(width, dtype=bool)  # logits wider than the tokenizer: the extra ids never come
        allowed[:min(width, bits.shape[0])] = bits[:width]
        import torch

        if scores.device.type != "cpu":
            return torch.where(torch.from_numpy(allowed).to(scores.device), scores, float("-inf"))
        # numpy on CPU: torch's elementwise ops split a 50k vector over its thread pool, which costs
        # tens of ms a token when the cores are busy with the forward pass of other requests.
        return torch.from_numpy(np.where(allowed, scores.numpy(), np.float32("-inf")))

    def accept(self, token: int) -> None:
        self._matcher.consume_token(token)
        self._check()

    @property
    def complete(self) -> bool:
        """The grammar allows nothing more: the answer is whole and the sequence should end."""
        return bool(self._matcher.is_stopped())

    def _check(self) -> None:
        if self._matcher.is_error():
            raise GrammarError(f"constrained decoding failed: {self._matcher.get_error()}")

