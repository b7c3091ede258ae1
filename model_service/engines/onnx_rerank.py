"""Reranking on ONNX Runtime, from a cross-encoder revision the registry exported (``models export-onnx``).

The stored graph maps a tokenized (query, document) pair to the classifier's raw logit; the export
wrote into the graph's metadata the activation ``CrossEncoder.predict`` applies on top (``sigmoid``
for a one-label model: 0..1, higher is more relevant; or ``identity``) and the length it truncates
pairs at, so these scores are the ``cross-encoder`` engine's own, to float rounding. Pairs are
micro-batched across requests as there (``microbatch``); usage counts each pair's tokens after
truncation, from the attention mask. Session, threads and providers: ``onnx_session``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from model_service.engines.base import Reranker, Scores
from model_service.engines.microbatch import Job, job_spans
from model_service.engines.onnx_session import OnnxEngine, tokenizer_limit

LOGITS = "logits"  # the output a rerank export names (model_registry.sources.onnx_graph)
_ACTIVATIONS = {
    "sigmoid": lambda x: np.exp(-np.logaddexp(0.0, -x)),  # 1 / (1 + e^-x) without overflow for large -x
    "identity": lambda x: x,
}


class OnnxReranker(OnnxEngine, Reranker):
    folder = "a rerank ONNX export (onnx/model.onnx with a 'logits' output; 'model-service models export-onnx')"

    def load(self) -> None:
        self.open_session()
        outputs = [o.name for o in self.session.get_outputs()]
        if outputs != [LOGITS]:
            raise ValueError(f"{self.model_path} holds an ONNX graph with outputs {outputs}, not a rerank export "
                             f"('{LOGITS}'); export the cross-encoder with 'model-service models export-onnx'")
        activation = self.metadata.get("activation", "sigmoid")  # CrossEncoder's default for one label
        if activation not in _ACTIVATIONS:
            raise ValueError(f"{self.model_path}: unknown activation {activation!r} in the graph's metadata")
        self.activation = _ACTIVATIONS[activation]
        exported_length = int(self.metadata.get("max_seq_length") or 0)
        self.max_model_len = self.settings.max_model_len or exported_length or tokenizer_limit(self.tokenizer)
        self.start_batcher()

    async def rerank(self, query: str, documents: list[str]) -> Scores:
        answer: Scores = await self.submit([(query, d) for d in documents])
        return answer

    def score(self, pairs: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
        """Each pair's score (float32, in order) and its token count after truncation."""

        def tokenize(rows: list[int]) -> Any:
            return self.tokenizer([pairs[i][0] for i in rows], [pairs[i][1] for i in rows], padding=True,
                                  truncation=True, max_length=self.max_model_len, return_tensors="np")

        logits, counts = self.run_in_batches([len(q) + len(d) for q, d in pairs], tokenize)
        return self.activation(logits[:, 0]), counts

    def answer_jobs(self, jobs: list[Job]) -> list[Any]:
        pairs = [pair for job in jobs for pair in job.items]
        scores, counts = self.score(pairs)
        self.observe_batch(len(pairs))
        return [Scores([float(s) for s in scores[start:end]], prompt_tokens=int(counts[start:end].sum()))
                for _, start, end in job_spans(jobs)]
