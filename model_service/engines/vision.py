"""Vision-language chat models (LLaVA 1.5 and kin) through ``AutoProcessor`` + ``AutoModelForImageTextToText``.

The processor owns what is model-specific: its chat template places the image token for each image
part, and its call expands those tokens and turns the images into pixel values. The engine then
speaks the text engines' interface (``ChatPrompt`` in, ``Delta`` out), so the chat route, stop
strings, SSE chunks and usage are shared with ``llm``.

Generation is one sequence at a time on one thread with a KV cache: the first forward pass sees the
pixel values, later ones only the newest token. Vision prompts carry hundreds of image tokens each
and one GPU serves one model, so batching would buy little here. Per-request sampling, seeds,
logprobs and the incremental detokenizer come from ``llm_batch.Sequence``, exactly as for text; a
closed iterator sets the sequence's cancel Event, which the loop checks between tokens.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from common.errors import InvalidRequestError
from model_service.engines.base import ChatPrompt
from model_service.engines.hardware import apply_torch_threads
from model_service.engines.llm_batch import Sequence
from model_service.engines.model_facts import context_length, eos_ids
from model_service.engines.threads import DONE
from model_service.engines.transformers_base import TransformersGenerator, chat_template_errors, logits_width
from model_service.settings import WorkerSettings

log = logging.getLogger(__name__)
# Processor outputs that are the prompt itself; everything else (pixel values, image sizes) is media.
_PROMPT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


class TransformersVision(TransformersGenerator):
    name = "transformers-vision"

    def __init__(self, settings: WorkerSettings) -> None:
        super().__init__(settings)
        self.processor: Any = None
        self._executor: ThreadPoolExecutor | None = None
        # Each written by one thread only (event loop / generation thread), like the llm scheduler's.
        self.submitted = 0
        self.left = 0

    def load(self) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.processor = AutoProcessor.from_pretrained(self.model_path)
        self.tokenizer = self.processor.tokenizer
        self.model = self.placed(AutoModelForImageTextToText.from_pretrained(self.model_path, dtype=self.dtype))
        self.vocab_size = logits_width(self.model)
        self.max_model_len = self.settings.max_model_len or context_length(self.model.config.get_text_config(),
                                                                           self.tokenizer)
        self.eos_ids = eos_ids(self.model.generation_config, self.tokenizer)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vision-generate",
                                            initializer=apply_torch_threads,
                                            initargs=(self.settings.model_threads(),))
        log.info("loaded %s on %s (%s), context %s", self.model_path, self.device, self.dtype, self.max_model_len)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self.model = self.processor = self.tokenizer = None

    @property
    def active(self) -> int:
        """Sequences waiting or running; tests wait for it to drop after a cancel."""
        return self.submitted - self.left

    # --- prompts --------------------------------------------------------------------------------
    def chat_prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
        return self.chat_inputs(messages, []).ids  # never given tools: the processor template is not asked

    def chat_inputs(self, messages: list[dict[str, Any]], images: list[Any]) -> ChatPrompt:
        """Template the messages (image parts become the model's image tokens), then let the
        processor expand those tokens and compute pixel values for ``images``."""
        if not (getattr(self.processor, "chat_template", None) or getattr(self.tokenizer, "chat_template", None)):
            raise InvalidRequestError("This model has no chat template.", code="no_chat_template")
        with chat_template_errors(ValueError):  # ValueError: e.g. image tokens and images that do not pair up
            text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            encoded = self.processor(text=text, images=images or None, return_tensors="pt")
        media = {k: v for k, v in encoded.items() if k not in _PROMPT_KEYS} or None
        return ChatPrompt(encoded["input_ids"][0].tolist(), media)

    # --- generation -----------------------------------------------------------------------------
    def start(self, seq: Sequence, media: Any) -> None:
        if self._executor is None:
            raise RuntimeError("the model is not loaded")
        self.submitted += 1
        self._executor.submit(self._run, seq, media)

    def _run(self, seq: Sequence, media: dict[str, Any] | None) -> None:
        """The decode loop on the generation thread; every outcome reaches the request as an item."""
        import torch

        try:
            if seq.cancel.is_set():  # cancelled while waiting for the thread
                return
            with torch.inference_mode():
                ids = torch.tensor([seq.prompt_ids], dtype=torch.long, device=self.device)
                out = self.model(input_ids=ids, **self._media_on_device(media), use_cache=True, logits_to_keep=1)
                while not seq.cancel.is_set() and not seq.advance(out.logits[0, -1]):
                    last = torch.tensor([[seq.ids[-1]]], dtype=torch.long, device=self.device)
                    out = self.model(input_ids=last, past_key_values=out.past_key_values, use_cache=True,
                                     logits_to_keep=1)
        except Exception as exc:  # reaches the request, never kills the thread
            log.exception("vision generation failed")
            seq.emit(exc)
        finally:
            self.left += 1
            seq.emit(DONE)

    def _media_on_device(self, media: dict[str, Any] | None) -> dict[str, Any]:
        """Pixel values in the model's dtype on its device; integer tensors (sizes) only moved."""
        if not media:
            return {}
        return {k: v.to(self.device, dtype=self.dtype) if v.is_floating_point() else v.to(self.device)
                for k, v in media.items()}
