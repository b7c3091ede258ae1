"""Grammar-constrained rows in the continuous batch, on the tiny random Llama of
``test_batching_scheduler``: a random model writes valid JSON only because the mask allows nothing
else, and the rows without a grammar in the same batch decode exactly as they do alone."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import llguidance

from model_service.engines.base import SamplingParams
from model_service.engines.constrained import json_schema_grammar
from model_service.engines.llm_batch import Sequence
from tests.unit.test_batching_scheduler import EOS, VOCAB, Collector, make_seq, scheduler, tiny_model, wait

__all__ = ["tiny_model"]  # the fixture, shared
SCHEMA = {"type": "object", "required": ["id", "ok"], "additionalProperties": False,
          "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 999}, "ok": {"type": "boolean"}}}


class _AsciiVocabulary:
    """The tiny model's 96 ids as printable ASCII (id i is chr(32 + i)), the last one end-of-sequence."""

    eos_token_id = EOS
    bos_token_id = None
    tokens = [bytes([32 + i]) for i in range(VOCAB - 1)] + [b"<eos>"]
    special_token_ids = [EOS]

    def __call__(self, text: bytes) -> list[int]:
        return [b - 32 for b in text]


class _Tokenizer:
    def __init__(self) -> None:
        self._tok = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_AsciiVocabulary()))

    def get(self) -> Any:
        return self._tok


def _constrained(prompt: list[int], grammar_tokenizer: _Tokenizer) -> tuple[Sequence, Collector]:
    sink = Collector()
    params = SamplingParams(max_tokens=40, temperature=0, grammar=json_schema_grammar(SCHEMA, "response_format"))
    seq = Sequence(prompt, params, sink, device="cpu", decode=lambda ids: "".join(chr(32 + i) for i in ids),
                   piece=str, eos_ids={EOS}, grammar_tokenizer=grammar_tokenizer)  # type: ignore[arg-type]
    return seq, sink


def test_rows_with_and_without_grammars_share_a_batch(tiny_model):
    sched = scheduler(tiny_model)
    tok = _Tokenizer()
    try:
        alone = []
        for prompt in ([5, 9, 17], [40] * 11):
            seq, sink = make_seq(prompt, 12)
            sched.submit(seq)
            wait([sink])
            alone.append(sink.tokens)
        plain = [make_seq(p, 12) for p in ([5, 9, 17], [40] * 11)]
        constrained = [_constrained(p, tok) for p in ([7, 3, 88], list(range(1, 30)))]
        for seq, _ in plain + constrained:
            sched.submit(seq)
        wait([sink for _, sink in plain + constrained])
        assert [sink.tokens for _, sink in plain] == alone
        assert sched.peak_batch > 2
        for _, sink in constrained:
            assert sink.finish == "stop"
            jsonschema.validate(json.loads("".join(chr(32 + i) for i in sink.tokens)), SCHEMA)
    finally:
        sched.close()
