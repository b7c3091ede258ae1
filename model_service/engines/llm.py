"""Causal language models through transformers: chat template, sampling, streaming, cancellation.

Requests are continuously batched (``scheduler.BatchScheduler``) on one generation thread: they
share forward passes, join at any token boundary and leave as soon as they finish. The decode loop
is our own rather than ``model.generate`` or transformers' continuous batching (one generation
config for every request) so each request keeps its own sampling params, seeded RNG, penalties and
raw-logit logprobs, and a cancellation check between every token: closing the async iterator sets
an Event the scheduler sees at the next step, which frees the row for the next request.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from jinja2 import TemplateError

from common.errors import InvalidRequestError
from model_service.engines.base import Delta, Engine, EngineInfo, SamplingParams
from model_service.engines.hardware import dtype_name, resolve_device, resolve_dtype
from model_service.engines.llm_batch import Sequence
from model_service.engines.model_facts import context_length, eos_ids
from model_service.engines.scheduler import BatchScheduler
from model_service.settings import WorkerSettings

log = logging.getLogger(__name__)
_DONE = object()


class TransformersLLM(Engine):
    name = "transformers"

    def __init__(self, settings: WorkerSettings) -> None:
        if not settings.model_path:
            raise ValueError("an llm worker needs MODEL_PATH (a folder with the Hugging Face model)")
        self.settings = settings
        self.model: Any = None
        self.tokenizer: Any = None
        self.device = resolve_device(settings.device)
        self.dtype = resolve_dtype(settings.dtype, self.device)
        self.max_model_len = settings.max_model_len
        self.eos_ids: set[int] = set()
        self._scheduler: BatchScheduler | None = None

    def load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = self.settings.model_path
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype)
        self.model = model.to(self.device).eval()
        self.max_model_len = self.max_model_len or context_length(self.model.config, self.tokenizer)
        self.eos_ids = eos_ids(self.model.generation_config, self.tokenizer)
        pad_id = self.tokenizer.pad_token_id
        pad_id = min(self.eos_ids, default=0) if pad_id is None else pad_id  # masked out; any id does
        self._scheduler = BatchScheduler(self.model, max_batch_size=_batch_limit(self.model, self.settings),
                                         max_batch_tokens=self.settings.max_batch_tokens, pad_id=pad_id,
                                         device=self.device, done=_DONE, on_step=self.observe_batch)
        log.info("loaded %s on %s (%s), context %s", path, self.device, self.dtype, self.max_model_len)

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.close()
            self._scheduler = None
        self.model = None
        self.tokenizer = None

    def info(self) -> EngineInfo:
        return EngineInfo(engine=self.name, device=self.device, dtype=dtype_name(self.dtype),
                          max_model_len=self.max_model_len)

    def chat_prompt(self, messages: list[dict[str, Any]]) -> list[int]:
        if not getattr(self.tokenizer, "chat_template", None):
            raise InvalidRequestError("This model has no chat template; use /v1/completions instead.",
                                      code="no_chat_template")
        try:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except TemplateError as exc:
            raise InvalidRequestError(f"The chat template rejected these messages: {exc}",
                                      param="messages", code="invalid_messages") from exc
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def text_prompt(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[Delta]:
        if self._scheduler is None:
            raise RuntimeError("the model is not loaded")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def emit(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # loop already closed: nobody is listening any more
                seq.cancel.set()

        seq = Sequence(prompt_ids, params, emit, device=self.device, decode=self.decode,
                       piece=self._piece, eos_ids=self.eos_ids)
        self._scheduler.submit(seq)
        try:
            while (item := await queue.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            seq.cancel.set()

    def _piece(self, token: int) -> str:
        return self.tokenizer.decode([token])

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
