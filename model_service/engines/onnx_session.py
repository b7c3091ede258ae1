"""What the ONNX Runtime engines (``onnx`` for embedding and for rerank) share, written once.

Both run a graph the registry exported (``models export-onnx``) from the revision's folder: one
session with the worker's threads (``WORKER_TORCH_THREADS`` as ``intra_op_num_threads``, 0 = ONNX
Runtime's default of one per core; inter-op off, as one run goes at a time), CUDA when the worker runs
on a GPU and the installed build has it, the model's own tokenizer, and the graph's metadata (the
quantization the worker reports, and what the rerank engine needs to turn logits into scores).
Requests are micro-batched by the same batcher thread as the torch engines (``microbatch``); a batch
runs longest inputs first, ``embedding_max_batch_size`` per ``session.run``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from model_service.engines.base import Engine
from model_service.engines.microbatch import MicroBatchedEngine
from model_service.engines.onnx_files import ONNX_FILES, onnx_file
from model_service.settings import WorkerSettings

log = logging.getLogger(__name__)


class OnnxEngine(MicroBatchedEngine):
    name = "onnx"
    folder = "a folder with an ONNX export (onnx/model.onnx; 'model-service models export-onnx')"

    def __init__(self, settings: WorkerSettings) -> None:
        super().__init__(settings)
        self.session: Any = None
        self.tokenizer: Any = None
        self.inputs: list[str] = []
        self.metadata: dict[str, str] = {}
        self.run_calls = 0  # read by tests: fewer runs than requests proves batching

    def open_session(self) -> None:
        """The session on the folder's graph, its inputs and metadata, and the tokenizer beside it."""
        import onnxruntime as ort
        from transformers import AutoTokenizer

        path = onnx_file(self.model_path)
        if path is None:
            raise ValueError(f"{self.model_path} holds no ONNX model ({' or '.join(ONNX_FILES)}); "
                             "export one with 'model-service models export-onnx'")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.settings.model_threads() or 0
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=self._providers(ort))
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.dtype = self.metadata.get("quantization", "float32")
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.vocab_size = len(self.tokenizer)
        self.model = self.session
        log.info("opened %s on ONNX Runtime (%s, %s)", path, self.session.get_providers()[0], self.dtype)

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

    def run_in_batches(self, lengths: list[int], tokenize: Callable[[list[int]], Any]) -> tuple[np.ndarray, np.ndarray]:
        """The graph's output for every input (rows in input order) and each input's token count (the
        attention mask's sum: the tokenizer already counted). Inputs run ``max_batch`` at a time,
        longest first (less padding); ``tokenize(indices)`` tokenizes those inputs (numpy)."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        outputs = np.empty((0,), dtype=np.float32)
        counts = np.empty(len(lengths), dtype=np.int64)
        for start in range(0, len(order), self.max_batch):
            rows = order[start:start + self.max_batch]
            batch = tokenize(rows)
            feed = {name: batch[name].astype(np.int64, copy=False) for name in self.inputs}
            output = self.session.run(None, feed)[0]
            self.run_calls += 1
            if start == 0:
                outputs = np.empty((len(lengths), *output.shape[1:]), dtype=output.dtype)
            outputs[rows] = output
            counts[rows] = batch["attention_mask"].sum(axis=1)
        return outputs, counts


def tokenizer_limit(tokenizer: Any) -> int:
    """The tokenizer's own length limit, capped at 512 (a tokenizer without one says 1e30)."""
    return int(min(getattr(tokenizer, "model_max_length", 512) or 512, 512))


def build_onnx_engine(settings: WorkerSettings) -> Engine:
    """The ONNX Runtime engine for the worker's model type (``ENGINES["onnx"]``)."""
    if settings.model_type == "rerank":
        from model_service.engines.onnx_rerank import OnnxReranker

        return OnnxReranker(settings)
    from model_service.engines.onnx import OnnxEmbedder

    return OnnxEmbedder(settings)
