"""Token choice for the transformers engine: OpenAI penalties, temperature, top-p, seeds, logprobs.

Penalties follow OpenAI's additive definition, counted over the completion only (not the prompt):
``logit[j] -= count[j] * frequency_penalty + (count[j] > 0) * presence_penalty``. transformers'
own ``RepetitionPenaltyLogitsProcessor`` is multiplicative and counts the prompt, so it is not a fit
for them; it is exactly vLLM's ``repetition_penalty`` extension, which it serves. ``logit_bias`` is
added to the logits before anything else, as OpenAI does, so it steers greedy decoding too.
"""

from __future__ import annotations

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    SequenceBiasLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from model_service.engines.base import SamplingParams


class OpenAIPenaltiesProcessor(LogitsProcessor):
    def __init__(self, prompt_len: int, presence: float = 0.0, frequency: float = 0.0) -> None:
        self.prompt_len = prompt_len
        self.presence = presence
        self.frequency = frequency

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_len:]
        if generated.shape[1] == 0 or (self.presence == 0.0 and self.frequency == 0.0):
            return scores
        counts = torch.zeros_like(scores)
        counts.scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - counts * self.frequency - (counts > 0).to(scores.dtype) * self.presence


def build_processors(params: SamplingParams, prompt_len: int) -> LogitsProcessorList:
    """Bias and penalties first (they shape the distribution), then temperature, top-k, top-p and
    min-p for sampling (vLLM's order); at temperature 0 only the first group matters."""
    procs = LogitsProcessorList()
    if params.logit_bias:
        procs.append(SequenceBiasLogitsProcessor({(token,): bias for token, bias in params.logit_bias.items()}))
    if params.presence_penalty or params.frequency_penalty:
        procs.append(OpenAIPenaltiesProcessor(prompt_len, params.presence_penalty, params.frequency_penalty))
    if params.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    if params.temperature > 0:
        if params.temperature != 1.0:
            procs.append(TemperatureLogitsWarper(params.temperature))
        if params.top_k > 0:
            procs.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1.0:
            procs.append(TopPLogitsWarper(params.top_p))
        if params.min_p > 0.0:
            procs.append(MinPLogitsWarper(params.min_p))
    return procs


def make_generator(seed: int | None, device: str) -> torch.Generator | None:
    """A per-request RNG so a seeded request is reproducible whatever else the process samples."""
    if seed is None:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(seed % (2**63))
    return gen


def choose(scores: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """Greedy at temperature 0, else a draw from the processed distribution (1-D ``scores``)."""
    if params.temperature == 0:
        return int(torch.argmax(scores))
    probs = torch.softmax(scores.float(), dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def token_logprobs(raw_logits: torch.Tensor, token_id: int, top: int) -> tuple[float, list[tuple[int, float]]]:
    """Log-probability of the chosen token and the ``top`` likeliest, from the model's raw output."""
    logp = torch.log_softmax(raw_logits.float(), dim=-1)
    chosen = float(logp[token_id])
    if top <= 0:
        return chosen, []
    values, ids = torch.topk(logp, top)
    return chosen, [(int(i), float(v)) for i, v in zip(ids, values, strict=True)]
