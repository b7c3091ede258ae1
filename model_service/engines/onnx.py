"""Sentence embeddings on ONNX Runtime, from a revision the registry exported (``models export-onnx``).

The stored graph is the whole sentence-transformers pipeline (transformer, pooling, normalisation),
so a batch is: tokenize, one ``session.run``, done; no torch in the request path. Requests are
micro-batched exactly as for the sentence-transformers engine (``microbatch``): one batcher thread,
longest inputs first, at most ``embedding_max_batch_size`` per run. Token counts are the attention
mask's sums: the tokenizer already did the counting.

Threads: ``WORKER_TORCH_THREADS`` sets the session's intra-op threads (0 = ONNX Runtime's default,
one per core); one run at a time, so inter-op parallelism stays off.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from model_service.engines.base import Embedder, Embeddings
from model_service.engines.embedding import declared_matryoshka
from model_service.engines.microbatch import Job, MicroBatchedEngine
from model_service.engines.onnx_files import ONNX_FILES, onnx_file
from model_service.settings import WorkerSettings

log = logging.getLogger(__name__)

class OnnxEmbedder(MicroBatchedEngine, Embedder):
    name = "onnx"
    folder = "a folder with an ONNX export (onnx/model.onnx; 'model-service models export-onnx')"

    def __init__(self, settings: WorkerSettings) -> None:
        super().__init__(settings)
        self.session: Any = None
        self.tokenizer: Any = None
        self.run_calls = 0  # read by tests: fewer runs than requests proves batching

    def load(self) -> None:
        import onnxruntime as ort
        from transformers import AutoConfig, AutoTokenizer

        path = onnx_file(self.model_path)
        if path is None:
            raise ValueError(f"{self.model_path} holds no ONNX model ({' or '.join(ONNX_FILES)}); "
                             "export one with 'model-service models export-onnx'")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.settings.torch_threads or 0
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=self._providers(ort))
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.max_model_len = self.settings.max_model_len or _max_seq_length(Path(self.model_path), self.tokenizer)
        self.embedding_dims = int(self.session.get_outputs()[0].shape[-1])
        self.vocab_size = len(self.tokenizer)
        self.matryoshka_dims = declared_matryoshka(AutoConfig.from_pretrained(self.model_path))
        self.dtype = self.session.get_modelmeta().custom_metadata_map.get("quantization", "float32")
        self.model = self.session
        self.start_batcher()
        log.info("loaded %s on ONNX Runtime (%s, %s), %s dims", path, self.session.get_providers()[0],
                 self.dtype, self.embedding_dims)

    def _providers(self, ort: Any) -> list[str]:
        """CUDA when the worker runs on a GPU and this onnxruntime build has it; else the CPU."""
        if self.device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def close(self) -> None:
        super().close()
        self.session = None

    def decode_tokens(self, token_ids: list[int]) -> str:
        return str(self.tokenizer.decode(token_ids, skip_special_tokens=True))

    async def embed(self, texts: list[str]) -> Embeddings:
        answer: Embeddings = await self.submit(texts)
        return answer

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Vectors (float32, one row per text, in order) and each text's token count."""
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        vectors = np.empty((len(texts), self.embedding_dims or 0), dtype=np.float32)
        counts = np.empty(len(texts), dtype=np.int64)
        for start in range(0, len(order), self.max_batch):
            rows = order[start:start + self.max_batch]
            batch = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                   max_length=self.max_model_len, return_tensors="np")
            feed = {name: batch[name].astype(np.int64, copy=False) for name in self.inputs}
            vectors[rows] = self.session.run(None, feed)[0]
            counts[rows] = batch["attention_mask"].sum(axis=1)
            self.run_calls += 1
        return vectors, counts

    def answer_jobs(self, jobs: list[Job]) -> list[Any]:
        texts = [t for job in jobs for t in job.items]
        vectors, counts = self.encode(texts)
        self.observe_batch(len(texts))
        answers, start = [], 0
        for job in jobs:
            end = start + len(job.items)
            answers.append(Embeddings(vectors=vectors[start:end], prompt_tokens=int(counts[start:end].sum())))
            start = end
        return answers


def _max_seq_length(folder: Path, tokenizer: Any) -> int:
    """sentence-transformers' ``max_seq_length`` (what the torch engine truncates at), else the
    tokenizer's own limit, capped at 512 (a tokenizer without one says 1e30)."""
    config = folder / "sentence_bert_config.json"
    if config.is_file():
        length = json.loads(config.read_text()).get("max_seq_length")
        if length:
            return int(length)
    return int(min(getattr(tokenizer, "model_max_length", 512) or 512, 512))
