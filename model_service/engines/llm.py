"""Causal language models through transformers: chat template, sampling, streaming, cancellation.

Requests are continuously batched (``scheduler.BatchScheduler``) on one generation thread: they
share forward passes, join at any token boundary and leave as soon as they finish. The decode loop
is our own rather than ``model.generate`` or transformers' continuous batching (one generation
config for every request) so each request keeps its own sampling params, seeded RNG, penalties and
raw-logit logprobs, and a cancellation check between every token: closing the async iterator sets
an Event the scheduler sees at the next step, which frees the row for the next request.
"""

from __future__ import annotations

import logging
from typing import Any

from model_service.engines.constrained import GrammarTokenizer
from model_service.engines.llm_batch import Sequence
from model_service.engines.model_facts import context_length, eos_ids
from model_service.engines.scheduler import BatchScheduler
from model_service.engines.threads import DONE
from model_service.engines.transformers_base import (
    TransformersGenerator,
    chat_prompt_ids,
    logits_width,
    template_takes_tools,
)
from model_service.settings import WorkerSettings

log = logging.getLogger(__name__)


class TransformersLLM(TransformersGenerator):
    name = "transformers"
    structured_outputs = True  # per-row grammars in the batch (``constrained``)

    def __init__(self, settings: WorkerSettings) -> None:
        super().__init__(settings)
        self._scheduler: BatchScheduler | None = None

    def load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.model = self.placed(AutoModelForCausalLM.from_pretrained(self.model_path, dtype=self.dtype))
        self.vocab_size = logits_width(self.model)
        self.max_model_len = self.settings.max_model_len or context_length(self.model.config, self.tokenizer)
        self.eos_ids = eos_ids(self.model.generation_config, self.tokenizer)
        self.grammar_tokenizer = GrammarTokenizer(self.tokenizer, self.vocab_size, self.eos_ids)
        pad_id = self.tokenizer.pad_token_id
        pad_id = min(self.eos_ids, default=0) if pad_id is None else pad_id  # masked out; any id does
        self._scheduler = BatchScheduler(self.model, max_batch_size=_batch_limit(self.model, self.settings),
                                         max_batch_tokens=self.settings.max_batch_tokens, pad_id=pad_id,
                                         device=self.device, done=DONE, on_step=self.observe_batch,
                                         threads=self.settings.model_threads())
        log.info("loaded %s on %s (%s), context %s", self.model_path, self.device, self.dtype, self.max_model_len)

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.close()
            self._scheduler = None
        self.model = None
        self.tokenizer = None

    def chat_prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
        return chat_prompt_ids(self.tokenizer, messages, tools)

    def template_takes_tools(self) -> bool:
        return template_takes_tools(self.tokenizer)

    def start(self, seq: Sequence, media: Any) -> None:
        if self._scheduler is None:
            raise RuntimeError("the model is not loaded")
        self._scheduler.submit(seq)

    @property
    def active(self) -> int:
        """Sequences in the engine (waiting or running); tests wait for it to drop after a cancel."""
        return self._scheduler.active if self._scheduler is not None else 0

    @property
    def scheduler(self) -> BatchScheduler | None:
        return self._scheduler


def _batch_limit(model: Any, settings: WorkerSettings) -> int:
    """The batch merges plain full-attention caches; other cache kinds (sliding windows, recurrent
    state) run one sequence at a time rather than risk a silently wrong merge."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    layers = DynamicCache(config=model.config).layers
    if all(type(layer) is DynamicLayer for layer in layers):
        return settings.max_batch_size
    log.warning("this model's KV cache cannot be batched here; serving one sequence at a time")
    return 1
