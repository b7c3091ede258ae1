"""Reranking with a sentence-transformers ``CrossEncoder``: each (query, document) pair is read
together and scored, which is why cross-encoders rank better than comparing two embeddings.

Pairs are micro-batched across requests like embeddings (``microbatch``): one ``predict`` over every
queued pair, up to ``embedding_max_batch_size`` pairs, waiting at most ``embedding_max_wait_ms``.
Scores are the model's own activation (a sigmoid for one-label models: 0..1, higher is more relevant).
Usage counts the pairs' tokens as the model's tokenizer sees them, truncated at its max length.
"""

from __future__ import annotations

import logging
from typing import Any

from model_service.engines.base import Reranker, Scores
from model_service.engines.microbatch import Job, MicroBatchedEngine, job_spans
from model_service.settings import WorkerSettings

log = logging.getLogger(__name__)


class CrossEncoderEngine(MicroBatchedEngine, Reranker):
    name = "cross-encoder"
    folder = "a cross-encoder (sequence classification) folder"

    def __init__(self, settings: WorkerSettings) -> None:
        super().__init__(settings)
        self.predict_calls = 0  # read by tests: fewer calls than requests proves batching

    def load(self) -> None:
        from sentence_transformers import CrossEncoder

        model = CrossEncoder(self.model_path, device=self.device, model_kwargs={"dtype": self.dtype})
        self.model = model.eval()
        self.max_model_len = self.settings.max_model_len or int(model.max_seq_length or 512)
        self.vocab_size = len(model.tokenizer)
        self.start_batcher()
        log.info("loaded %s on %s (%s)", self.model_path, self.device, self.dtype)

    async def rerank(self, query: str, documents: list[str]) -> Scores:
        answer: Scores = await self.submit([(query, d) for d in documents])
        return answer

    def answer_jobs(self, jobs: list[Job]) -> list[Any]:
        pairs = [pair for job in jobs for pair in job.items]
        scores = self.model.predict(pairs, batch_size=self.max_batch, convert_to_numpy=True, show_progress_bar=False)
        self.predict_calls += 1
        self.observe_batch(len(pairs))
        tokenized = self.model.tokenizer([q for q, _ in pairs], [d for _, d in pairs], truncation=True,
                                         max_length=self.max_model_len)
        counts = [len(ids) for ids in tokenized["input_ids"]]
        return [Scores([float(s) for s in scores[start:end]], prompt_tokens=sum(counts[start:end]))
                for _, start, end in job_spans(jobs)]
