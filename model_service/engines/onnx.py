"""Sentence embeddings on ONNX Runtime, from a revision the registry exported (``models export-onnx``).

The stored graph is the whole sentence-transformers pipeline (transformer, pooling, normalisation),
so a batch is: tokenize, one ``session.run``, done; no torch in the request path. Requests are
micro-batched exactly as for the sentence-transformers engine (``microbatch``); the session, its
threads (``WORKER_TORCH_THREADS``) and providers are the ONNX engines' own (``onnx_session``). Token
counts are the attention mask's sums: the tokenizer already did the counting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from model_service.engines.base import Embedder, Embeddings
from model_service.engines.embedding import declared_matryoshka
from model_service.engines.microbatch import Job, job_spans
from model_service.engines.onnx_session import OnnxEngine, tokenizer_limit


class OnnxEmbedder(OnnxEngine, Embedder):
    def load(self) -> None:
        from transformers import AutoConfig

        self.open_session()
        self.max_model_len = self.settings.max_model_len or _max_seq_length(Path(self.model_path), self.tokenizer)
        self.embedding_dims = int(self.session.get_outputs()[0].shape[-1])
        self.matryoshka_dims = declared_matryoshka(AutoConfig.from_pretrained(self.model_path))
        self.start_batcher()

    async def embed(self, texts: list[str]) -> Embeddings:
        answer: Embeddings = await self.submit(texts)
        return answer

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Vectors (float32, one row per text, in order) and each text's token count."""

        def tokenize(rows: list[int]) -> Any:
            return self.tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                  max_length=self.max_model_len, return_tensors="np")

        return self.run_in_batches([len(t) for t in texts], tokenize)

    def answer_jobs(self, jobs: list[Job]) -> list[Any]:
        texts = [t for job in jobs for t in job.items]
        vectors, counts = self.encode(texts)
        self.observe_batch(len(texts))
        return [Embeddings(vectors=vectors[start:end], prompt_tokens=int(counts[start:end].sum()))
                for _, start, end in job_spans(jobs)]


def _max_seq_length(folder: Path, tokenizer: Any) -> int:
    """sentence-transformers' ``max_seq_length`` (what the torch engine truncates at), else the
    tokenizer's own limit, capped at 512 (a tokenizer without one says 1e30)."""
    config = folder / "sentence_bert_config.json"
    if config.is_file():
        length = json.loads(config.read_text()).get("max_seq_length")
        if length:
            return int(length)
    return tokenizer_limit(tokenizer)
