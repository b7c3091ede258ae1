"""Sentence embeddings through sentence-transformers, dynamically micro-batched off the event loop.

Requests queue and one batcher thread (``microbatch.MicroBatchedEngine``) takes up to
``embedding_max_batch_size`` inputs (waiting at most ``embedding_max_wait_ms`` after the first one
for company), sorts them by length so padding stays small, runs ONE ``encode`` and hands each
request its own slice. Usage counts come from the model's own tokenizer, capped at
``max_seq_length`` (longer inputs are truncated before encoding).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from model_service.engines.base import Embedder, Embeddings
from model_service.engines.microbatch import Job, MicroBatchedEngine
from model_service.settings import WorkerSettings

log = logging.getLogger(__name__)


class SentenceTransformerEngine(MicroBatchedEngine, Embedder):
    name = "sentence-transformers"
    folder = "a sentence-transformers folder"

    def __init__(self, settings: WorkerSettings) -> None:
        super().__init__(settings)
        self.encode_calls = 0  # read by tests: fewer encodes than requests proves batching

    def load(self) -> None:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(self.model_path, device=self.device, model_kwargs={"dtype": self.dtype})
        self.model = model.eval()
        dims = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.embedding_dims = int(dims())
        self.vocab_size = len(model.tokenizer)
        self.matryoshka_dims = matryoshka_dims(model)
        self.max_model_len = self.settings.max_model_len or int(model.max_seq_length or 512)
        self.start_batcher()
        log.info("loaded %s on %s (%s), %s dims", self.model_path, self.device, self.dtype, self.embedding_dims)

    def decode_tokens(self, token_ids: list[int]) -> str:
        return str(self.model.tokenizer.decode(token_ids, skip_special_tokens=True))

    async def embed(self, texts: list[str]) -> Embeddings:
        answer: Embeddings = await self.submit(texts)
        return answer

    def answer_jobs(self, jobs: list[Job]) -> list[Any]:
        """ONE encode over every input, longest first so each forward pass pads little (a request
        with more inputs than a batch still goes in this one call, as several forward passes)."""
        texts = [t for job in jobs for t in job.items]
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        vectors = self.model.encode([texts[i] for i in order], batch_size=self.max_batch,
                                    convert_to_numpy=True, show_progress_bar=False)
        self.encode_calls += 1
        self.observe_batch(len(texts))
        by_input = np.empty_like(vectors, dtype=np.float32)
        by_input[order] = vectors  # row ``pos`` of the sorted encode is input ``order[pos]``
        tokenized = self.model.tokenizer(texts, add_special_tokens=True, truncation=True,
                                         max_length=self.max_model_len)
        counts = [len(ids) for ids in tokenized["input_ids"]]
        answers, start = [], 0
        for job in jobs:
            end = start + len(job.items)
            answers.append(Embeddings(vectors=by_input[start:end], prompt_tokens=sum(counts[start:end])))
            start = end
        return answers


def matryoshka_dims(model: Any) -> tuple[int, ...] | None:
    """The Matryoshka sizes a loaded sentence-transformers model's config declares (``declared_matryoshka``)."""
    return declared_matryoshka(getattr(getattr(model[0], "auto_model", None), "config", None))


def declared_matryoshka(config: Any) -> tuple[int, ...] | None:
    """The sizes a model's config says it may be cut to (vLLM reads the same two keys): its
    ``matryoshka_dimensions``, or any size for ``is_matryoshka``; None when it declares neither."""
    declared = getattr(config, "matryoshka_dimensions", None)
    if declared:
        return tuple(int(d) for d in declared)
    return () if getattr(config, "is_matryoshka", False) else None
