"""Tracing a stored model into one ONNX graph (``onnx_export`` stores the result as a revision).

Both kinds of model are traced the same way: the sentence-transformers model loaded in fp32 on the
CPU, wrapped as ``forward(tensors...) -> output``, exported with the TorchScript tracer
(``dynamo=False``, opset 17) with batch and sequence as dynamic axes, then optionally int8 quantised,
then tagged with what the worker needs to read the output exactly as the torch engine would.

- **embedding** (``SentenceTransformer``): the whole pipeline (transformer, pooling, normalisation,
  dense layers), output ``sentence_embedding``.
- **rerank** (``CrossEncoder``, sequence classification): tokenizer pair inputs to the classifier's
  raw ``logits`` ``[batch, 1]``. The activation ``CrossEncoder.predict`` applies on top (sigmoid for
  a one-label model unless its config names another) is not in the graph but in its metadata
  (``activation``), with the length the CrossEncoder truncates at (``max_seq_length``), so the worker
  computes the very scores the torch engine returns.

int8 is ONNX Runtime's dynamic quantisation of the MatMul weights (per channel; activations per batch
at run time). The feed-forward down-projections (``/output/dense/``), whose post-GELU inputs span the
widest range, stay fp32: for MiniLM that keeps every sentence's cosine to the torch output above 0.99
where quantising them too drops it to 0.985; on the test cross-encoder it kept the per-query rank
correlation of the scores with torch's a little higher (0.993 against 0.989 on 200 pairs in batches of
32). The pooler and the classifier are ``Gemm`` nodes, which are not quantised at all: the score itself
is computed in fp32.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

from common.errors import InvalidRequestError

Quantize = Literal["int8"] | None
OPSET = 17
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# CrossEncoder activations the worker applies to the graph's logits, by the torch class's name.
ACTIVATIONS = {"Sigmoid": "sigmoid", "Identity": "identity"}


def export_embedding_graph(folder: Path, target: Path, quantize: Quantize, scratch: Path) -> None:
    """The sentence-transformers pipeline in ``folder`` as ``target`` (output ``sentence_embedding``)."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu", model_kwargs={"dtype": torch.float32}).eval()
    sample = model.tokenizer(["an example sentence to trace", "and a second"], padding=True, return_tensors="pt")
    trace(model, "sentence_embedding", sample, target, quantize, scratch)
    tag(target, quantization=quantize or "float32")


def export_rerank_graph(folder: Path, target: Path, quantize: Quantize, scratch: Path) -> None:
    """The cross-encoder in ``folder`` as ``target`` (output ``logits``), its activation in the metadata."""
    import torch
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(folder), device="cpu", model_kwargs={"dtype": torch.float32}).eval()
    activation = ACTIVATIONS.get(type(model.activation_fn).__name__)
    if model.num_labels != 1 or activation is None:
        raise InvalidRequestError(
            f"Only cross-encoders with one label and a sigmoid or identity activation export to ONNX for "
            f"reranking; this one has {model.num_labels} labels and {type(model.activation_fn).__name__}.",
            param="model_id", code="onnx_export_unsupported")
    sample = model.tokenizer(["an example query", "another query"], ["a document to trace", "and a second"],
                             padding=True, return_tensors="pt")
    trace(model, "scores", sample, target, quantize, scratch, output_name="logits")
    tag(target, quantization=quantize or "float32", activation=activation,
        max_seq_length=str(model.max_seq_length or ""))


def trace(model: Any, key: str, sample: Any, target: Path, quantize: Quantize, scratch: Path,
          output_name: str | None = None) -> None:
    """Export ``model(features)[key]`` for the tokenizer ``sample`` into ``target``, int8 if asked."""
    import torch

    names = [n for n in _INPUTS if n in sample]
    output = output_name or key
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in names}
    target.parent.mkdir(parents=True, exist_ok=True)
    fp32 = scratch / "fp32.onnx" if quantize else target
    with torch.inference_mode(), warnings.catch_warnings():
        # The tracer warns about every shape check it freezes; the ones here hold for any input
        # shape (the exports' quality checks against torch are in the tests).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")  # indices are never negative
        torch.onnx.export(_pipeline(model, names, key), tuple(sample[n] for n in names), str(fp32),
                          input_names=names, output_names=[output],
                          dynamic_axes={**axes, output: {0: "batch"}}, opset_version=OPSET, dynamo=False)
    if quantize:
        quantize_int8(fp32, target)


def tag(path: Path, **metadata: str) -> None:
    """Write ``metadata`` into the graph's metadata (the worker reads the quantization and, for
    rerank, the activation and the truncation length there)."""
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, metadata)
    onnx.save(model, str(path))


def quantize_int8(fp32: Path, target: Path) -> None:
    """Dynamic int8: MatMul weights per channel, activations quantised per batch at run time; the
    feed-forward down-projections stay fp32 (the module docstring says why)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep_fp32 = [node.name for node in onnx.load(str(fp32), load_external_data=False).graph.node
                 if node.op_type == "MatMul" and "/output/dense/" in node.name and "attention" not in node.name]
    quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QUInt8, per_channel=True,
                     op_types_to_quantize=["MatMul"], nodes_to_exclude=keep_fp32)


def _pipeline(model: Any, names: list[str], key: str) -> Any:
    """A sentence-transformers model as one ``forward(tensors...) -> features[key]`` module (built
    here: torch is imported only when an export runs)."""
    import torch

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> Any:
            return self.model(dict(zip(names, tensors, strict=True)))[key]

    return Pipeline()
