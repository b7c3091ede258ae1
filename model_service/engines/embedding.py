"""Sentence embeddings through sentence-transformers, encoded off the event loop.

Encoding runs on one dedicated thread (the model is not shared between threads); micro-batching
across requests is a later step that fits behind ``embed``. Usage counts come from the model's own
tokenizer, capped at its ``max_seq_length`` because longer inputs are truncated before encoding.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from model_service.engines.base import Embeddings, Engine, EngineInfo
from model_service.engines.hardware import dtype_name, resolve_device, resolve_dtype
from model_service.settings import WorkerSettings

log = logging.getLogger(__name__)


class SentenceTransformerEngine(Engine):
    name = "sentence-transformers"

    def __init__(self, settings: WorkerSettings) -> None:
        if not settings.model_path:
            raise ValueError("an embedding worker needs MODEL_PATH (a sentence-transformers folder)")
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.dtype = resolve_dtype(settings.dtype, self.device)
        self.model: Any = None
        self.dims: int | None = None
        self.max_seq_length: int | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")

    def load(self) -> None:
        from sentence_transformers import SentenceTransformer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        model = SentenceTransformer(self.settings.model_path, device=self.device,
                                    model_kwargs={"dtype": self.dtype})
        self.model = model.eval()
        dims = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dims = int(dims())
        self.max_seq_length = self.settings.max_model_len or int(model.max_seq_length or 512)
        log.info("loaded %s on %s (%s), %s dims", self.settings.model_path, self.device, self.dtype, self.dims)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.model = None

    def info(self) -> EngineInfo:
        return EngineInfo(engine=self.name, device=self.device, dtype=dtype_name(self.dtype),
                          max_model_len=self.max_seq_length, embedding_dims=self.dims)

    async def embed(self, texts: list[str]) -> Embeddings:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._encode, texts)

    def _encode(self, texts: list[str]) -> Embeddings:
        vectors = self.model.encode(texts, convert_to_numpy=True, show_progress_bar=False)
        tokenized = self.model.tokenizer(texts, add_special_tokens=True, truncation=True,
                                         max_length=self.max_seq_length)
        tokens = sum(len(ids) for ids in tokenized["input_ids"])
        return Embeddings(vectors=[v.astype("float32").tolist() for v in vectors], prompt_tokens=tokens)
