"""The pieces a continuous batch is made of: one ``Sequence`` per request, and the ``KVBatch`` they share.

Rows of a batch have different lengths, so the shared KV cache is *left*-padded: every row's newest
token sits in the last column, one forward pass with ``input_ids[B, 1]`` advances every row, and an
attention mask plus explicit position ids make the padding invisible to the model. Rows join by
concatenating their (separately prefilled) caches on the batch axis, padding the shorter side on
the left, and leave by selecting the remaining rows; columns that became padding in every row are
trimmed so a finished long request does not keep costing attention work.

Sampling stays per row (``Sequence.advance``): each request keeps its own processors (penalties,
temperature, top-p), its own seeded generator, logprobs from its raw logits and its own detokenizer,
exactly as the one-sequence loop did, so batching changes throughput and nothing a client sees.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from model_service.engines.base import Delta, SampledToken, SamplingParams
from model_service.engines.constrained import GrammarError, GrammarTokenizer, Matcher
from model_service.engines.detok import IncrementalDecoder
from model_service.engines.sampling import build_processors, choose, make_generator, token_logprobs


class Sequence:
    """One request's state on the generation thread; ``cancel`` is set from the event loop (the
    request's ``threads.thread_stream`` hands it in; a fresh Event otherwise)."""

    def __init__(self, prompt_ids: list[int], params: SamplingParams, emit: Callable[[Any], None], *,
                 device: str, decode: Callable[[list[int]], str], piece: Callable[[int], str],
                 eos_ids: set[int], cancel: threading.Event | None = None,
                 grammar_tokenizer: GrammarTokenizer | None = None) -> None:
        self.prompt_ids = prompt_ids
        self.params = params
        self.emit = emit
        self.cancel = cancel if cancel is not None else threading.Event()
        self.ids = list(prompt_ids)
        self.prefilled = 0  # prompt tokens already in ``cache`` (a long prompt is prefilled in chunks)
        self.cache: Any = None
        self._processors = build_processors(params, len(prompt_ids))
        self._generator = make_generator(params.seed, device)
        self._decoder = IncrementalDecoder(decode)
        self._piece = piece
        self._eos_ids = eos_ids
        self._matcher = None
        if params.grammar is not None:
            if grammar_tokenizer is None:
                raise RuntimeError("this engine cannot decode under a grammar")
            self._matcher = Matcher(grammar_tokenizer, params.grammar)

    @property
    def generated(self) -> int:
        return len(self.ids) - len(self.prompt_ids)

    def advance(self, raw: torch.Tensor) -> bool:
        """Choose the next token from this row's raw logits (1-D), emit its delta; True when finished.

        A grammar masks the logits before anything else, so penalties, temperature and top-p only
        ever choose among tokens the grammar allows; a complete grammar ends the sequence."""
        try:
            scores = raw.float() if self._matcher is None else self._matcher.mask(raw.float())
            if self._processors:
                history = torch.tensor([self.ids], device=raw.device)
                scores = self._processors(history, scores.unsqueeze(0))[0]
            token = choose(scores, self.params, self._generator)
            if self._matcher is not None:
                self._matcher.accept(token)
        except GrammarError as exc:
            self.emit(exc)
            return True
        self.ids.append(token)
        is_eos = token in self._eos_ids
        complete = is_eos or (self._matcher is not None and self._matcher.complete)
        finish = "stop" if complete else ("length" if self.generated >= self.params.max_tokens else None)
        text = "" if is_eos else self._decoder.push(token)
        if finish:
            text += self._decoder.flush()
        self.emit(Delta(text=text, token_ids=[token], finish_reason=finish, logprobs=self._logprobs(raw, token)))
        return finish is not None

    def _logprobs(self, raw: torch.Tensor, token: int) -> list[SampledToken]:
        if not self.params.logprobs:
            return []
        chosen, top = token_logprobs(raw, token, self.params.top_logprobs)
        return [SampledToken(self._piece(token), chosen, [(self._piece(i), lp) for i, lp in top])]


def left_pad(rows: list[list[int]], pad_id: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` for prompts of different lengths, padded on the left."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long, device=device)
        mask[i, width - len(row):] = 1
    return ids, mask


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding: each real token's index among its row's real tokens."""
    return (mask.cumsum(dim=1) - 1).clamp(min=0)


def _pad_cols(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    spec = [0, 0] * (t.dim() - 1 - dim % t.dim()) + [missing, 0]
    return F.pad(t, spec)


class KVBatch:
    """The running decode batch: its rows, their shared left-padded cache and attention mask."""

    def __init__(self) -> None:
        self.rows: list[Sequence] = []
        self.cache: Any = None
        self.mask: torch.Tensor | None = None  # [rows, cache length], 1 where a real token is

    def __len__(self) -> int:
        return len(self.rows)

    def join(self, seqs: list[Sequence], cache: Any, mask: torch.Tensor) -> None:
        """Add prefilled rows (their cache holds exactly their prompt tokens, left-padded by ``mask``)."""
        if not self.rows:
            self.rows, self.cache, self.mask = list(seqs), cache, mask
            return
        assert self.mask is not None
        width = max(self.mask.shape[1], mask.shape[1])
        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([_pad_cols(mine.keys, width, -2), _pad_cols(theirs.keys, width, -2)])
            mine.values = torch.cat([_pad_cols(mine.values, width, -2), _pad_cols(theirs.values, width, -2)])
        self.mask = torch.cat([_pad_cols(self.mask, width, 1), _pad_cols(mask, width, 1)])
        self.rows.extend(seqs)

    def keep(self, keep: list[int]) -> None:
        """Keep only the rows at ``keep`` (finished and cancelled rows leave), then trim dead columns."""
        if len(keep) == len(self.rows):
            return
        if not keep:
            self.rows, self.cache, self.mask = [], None, None
            return
        assert self.mask is not None
        index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        lead = int((mask.sum(dim=0) == 0).long().cumprod(dim=0).sum())  # all-padding columns on the left
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, index)[..., lead:, :]
            layer.values = layer.values.index_select(0, index)[..., lead:, :]
        self.mask = mask[:, lead:]
        self.rows = [self.rows[i] for i in keep]

    def step(self, model: Any) -> torch.Tensor:
        """One decode forward pass for every row; returns the raw next-token logits ``[rows, vocab]``."""
        assert self.mask is not None
        device = self.mask.device
        last = torch.tensor([[seq.ids[-1]] for seq in self.rows], dtype=torch.long, device=device)
        pos = self.mask.sum(dim=1, keepdim=True)
        self.mask = torch.cat([self.mask, torch.ones_like(pos)], dim=1)
        out = model(input_ids=last, attention_mask=self.mask, position_ids=pos, past_key_values=self.cache,
                    use_cache=True, logits_to_keep=1)
        self.cache = out.past_key_values
        return out.logits[:, -1]
