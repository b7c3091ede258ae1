"""Causal language models through transformers: chat template, sampling, streaming, cancellation.

One sequence runs at a time on a single generation thread (a continuous-batching scheduler is a
later step and fits behind the same ``generate``). The decode loop is our own rather than
``model.generate`` so each request gets its own seeded RNG, raw-logit logprobs and a cancellation
check between every token: closing the async iterator sets an Event the thread sees within one step.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from jinja2 import TemplateError

from common.errors import InvalidRequestError
from model_service.engines.base import Delta, Engine, EngineInfo, SamplingParams, TokenLogprob
from model_service.engines.detok import IncrementalDecoder
from model_service.engines.hardware import dtype_name, resolve_device, resolve_dtype
from model_service.engines.sampling import build_processors, choose, make_generator, token_logprobs
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
        self.active = 0  # sequences on the generation thread right now (0 or 1)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-generate")

    def load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = self.settings.model_path
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype)
        self.model = model.to(self.device).eval()
        self.max_model_len = self.max_model_len or _context_length(self.model.config, self.tokenizer)
        self.eos_ids = _eos_ids(self.model.generation_config, self.tokenizer)
        log.info("loaded %s on %s (%s), context %s", path, self.device, self.dtype, self.max_model_len)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
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
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # loop already closed: nobody is listening any more
                cancel.set()

        self._executor.submit(self._run, prompt_ids, params, cancel, emit)
        try:
            while (item := await queue.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()

    def _run(self, prompt_ids: list[int], params: SamplingParams, cancel: threading.Event,
             emit: Callable[[Any], None]) -> None:
        """The generation thread: one forward pass per token, checking ``cancel`` between them."""
        self.active += 1
        try:
            if not cancel.is_set():
                with torch.inference_mode():
                    self._decode_loop(prompt_ids, params, cancel, emit)
        except Exception as exc:  # reaches the request as an error, never kills the thread
            log.exception("generation failed")
            emit(exc)
        finally:
            self.active -= 1
            emit(_DONE)

    def _decode_loop(self, prompt_ids: list[int], params: SamplingParams, cancel: threading.Event,
                     emit: Callable[[Any], None]) -> None:
        processors = build_processors(params, len(prompt_ids))
        generator = make_generator(params.seed, self.device)
        decoder = IncrementalDecoder(self.decode)
        all_ids = torch.tensor([prompt_ids], device=self.device)
        step_input, cache = all_ids, None
        for step in range(params.max_tokens):
            if cancel.is_set():
                return
            out = self.model(input_ids=step_input, past_key_values=cache, use_cache=True)
            cache, raw = out.past_key_values, out.logits[0, -1]
            scores = processors(all_ids, raw.unsqueeze(0).float())[0] if processors else raw.float()
            token = choose(scores, params, generator)
            finish = "stop" if token in self.eos_ids else ("length" if step + 1 == params.max_tokens else None)
            text = "" if token in self.eos_ids else decoder.push(token)
            if finish:
                text += decoder.flush()
            emit(Delta(text=text, token_ids=[token], finish_reason=finish,
                       logprobs=self._logprobs(raw, token, params)))
            if finish:
                return
            step_input = torch.tensor([[token]], device=self.device)
            all_ids = torch.cat([all_ids, step_input], dim=1)

    def _logprobs(self, raw: torch.Tensor, token: int, params: SamplingParams) -> list[TokenLogprob]:
        if not params.logprobs:
            return []
        chosen, top = token_logprobs(raw, token, params.top_logprobs)
        piece = self.tokenizer.decode([token])
        return [TokenLogprob(piece, chosen, [(self.tokenizer.decode([i]), lp) for i, lp in top])]


def _context_length(config: Any, tokenizer: Any) -> int:
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 10**7 else 2048


def _eos_ids(generation_config: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for value in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(v for v in value if isinstance(v, int))
    return ids
