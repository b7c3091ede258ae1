"""The continuous-batching scheduler on a tiny random Llama (milliseconds per forward pass).

A real transformers model, so padding, masks, position ids and cache merging are exercised for real;
greedy outputs under batching must equal one-at-a-time outputs, including chunked prefill.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import torch

from model_service.engines.base import Delta, SamplingParams
from model_service.engines.llm_batch import Sequence
from model_service.engines.scheduler import BatchScheduler

_DONE = object()
VOCAB = 96
EOS = 95


@pytest.fixture(scope="module")
def tiny_model() -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         initializer_range=0.2, eos_token_id=EOS)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


class Collector:
    """What one request receives: deltas until the scheduler says the sequence has left."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.finish: str | None = None
        self.left = threading.Event()

    def __call__(self, item: Any) -> None:
        if item is _DONE:
            self.left.set()
        elif isinstance(item, Delta):
            self.tokens.extend(item.token_ids)
            self.finish = item.finish_reason or self.finish


def make_seq(prompt: list[int], max_tokens: int, eos: bool = True, **params: Any) -> tuple[Sequence, Collector]:
    sink = Collector()
    seq = Sequence(prompt, SamplingParams(max_tokens=max_tokens, temperature=0, **params), sink,
                   device="cpu", decode=lambda ids: " ".join(map(str, ids)), piece=str,
                   eos_ids={EOS} if eos else set())
    return seq, sink


def scheduler(model: Any, **kw: Any) -> BatchScheduler:
    opts = {"max_batch_size": 8, "max_batch_tokens": 256, "pad_id": 0, "device": "cpu"} | kw
    return BatchScheduler(model, done=_DONE, **opts)


def wait(sinks: list[Collector], within_s: float = 20.0) -> None:
    for sink in sinks:
        assert sink.left.wait(within_s)


PROMPTS = [[5, 9, 17], list(range(1, 30)), [40] * 11, [7, 3, 88, 12, 1, 60, 2], list(range(50, 90))]


def test_batched_greedy_equals_one_at_a_time(tiny_model):
    sched = scheduler(tiny_model, max_batch_tokens=32)  # the 40-token prompt is prefilled in two chunks
    try:
        solo = []
        for prompt in PROMPTS:
            seq, sink = make_seq(prompt, 12)
            sched.submit(seq)
            wait([sink])
            solo.append(sink.tokens)
        before = sched.forward_calls
        pairs = [make_seq(p, 12) for p in PROMPTS]
        for seq, _ in pairs:
            sched.submit(seq)
        wait([sink for _, sink in pairs])
        assert [sink.tokens for _, sink in pairs] == solo
        assert sched.peak_batch > 1
        assert sched.forward_calls - before < sum(len(t) for t in solo)
    finally:
        sched.close()


def test_rows_keep_their_own_sampling_params(tiny_model):
    sched = scheduler(tiny_model)
    try:
        plain, plain_sink = make_seq([3, 4, 5], 10)
        penal, penal_sink = make_seq([3, 4, 5], 10, frequency_penalty=2.0, presence_penalty=2.0)
        short, short_sink = make_seq([3, 4, 5], 2)
        for seq in (plain, penal, short):
            sched.submit(seq)
        wait([plain_sink, penal_sink, short_sink])
        assert len(short_sink.tokens) == 2 and short_sink.finish == "length"
        assert len(set(penal_sink.tokens)) >= len(set(plain_sink.tokens))
        assert plain_sink.tokens[:2] == short_sink.tokens
    finally:
        sched.close()


def test_cancelled_row_frees_its_slot_while_others_continue(tiny_model):
    sched = scheduler(tiny_model, max_batch_size=2)
    try:
        a, a_sink = make_seq([1, 2, 3], 400, eos=False)  # A and B run until cancelled
        b, b_sink = make_seq([4, 5, 6], 400, eos=False)
        c, c_sink = make_seq([7, 8, 9], 3, eos=False)
        sched.submit(a)
        sched.submit(b)
        for _ in range(500):
            if len(a_sink.tokens) >= 2 and len(b_sink.tokens) >= 2:
                break
            time.sleep(0.005)
        sched.submit(c)
        time.sleep(0.05)
        assert not c_sink.tokens  # the batch is full: C waits
        a.cancel.set()
        wait([a_sink, c_sink])
        assert len(c_sink.tokens) == 3 and not b_sink.left.is_set()
        assert sched.peak_batch == 2
        b.cancel.set()
        wait([b_sink])
        assert sched.active == 0 and sched.running == 0
    finally:
        sched.close()


def test_close_releases_waiting_requests(tiny_model):
    sched = scheduler(tiny_model, max_batch_size=1)
    seqs = [make_seq([1, 2], 500) for _ in range(3)]
    for seq, _ in seqs:
        sched.submit(seq)
    sched.close()
    wait([sink for _, sink in seqs], within_s=5)
