"""Export a stored sentence-transformers model to ONNX once, in the registry, as a revision of its own.

A worker with ``--engine onnx`` (or ``auto`` on such a revision) then runs ONNX Runtime on the stored
graph: air-gapped sites never export at start-up, and every file of the export (the graph, the
tokenizer, the configs) is sha256-verified on each fetch like any other revision.

The export reads a stored revision back (verified), traces the whole sentence-transformers pipeline
(transformer, pooling, normalisation, any dense layers) with ``torch.onnx.export`` into one graph whose
output is the sentence embedding, and stores it as ``onnx/model.onnx`` next to the tokenizer and
configs, without the torch weights. ``quantize="int8"`` stores ONNX Runtime's dynamic int8
quantisation of that graph instead (weights per channel; the feed-forward down-projections, whose
post-GELU inputs span the widest range, stay fp32: that keeps every sentence's cosine to the torch
output above 0.99 on our test set, where quantising them too drops it to 0.985).

Why ``torch.onnx.export`` and not optimum: ``optimum-onnx`` pins ``transformers<4.58`` and the
project runs transformers 5, and exporting a sentence-transformers encoder needs nothing optimum adds.
The exporter needs the worker extra (torch, sentence-transformers, onnx) on the registry host; their
absence is a 400 that says so, never an ``ImportError`` inside a job.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Literal

from common.errors import InvalidRequestError
from model_registry.catalog import Catalog
from model_registry.fetch import fetch_model
from model_registry.ids import validate_model_id
from model_registry.ingest import Progress
from model_registry.records import Manifest
from model_registry.sources.folder import import_folder

Quantize = Literal["int8"] | None
EXPORT_PACKAGES = ("torch", "sentence_transformers", "onnx", "onnxruntime")
ONNX_FILE = "onnx/model.onnx"
# Torch weights and other runtimes' copies are left out of the ONNX revision: only the graph runs.
_NOT_COPIED = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ot", ".onnx", ".onnx_data")
_NOT_COPIED_DIRS = frozenset({"onnx", "openvino"})
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OPSET = 17


def onnx_revision(source_revision: str, quantize: Quantize) -> str:
    """``onnx-fp32-<source>`` / ``onnx-int8-<source>``: re-exporting the same revision is a no-op."""
    return f"onnx-{quantize or 'fp32'}-{source_revision}"[:64]


def check_export_packages() -> None:
    missing = [p for p in EXPORT_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise InvalidRequestError(
            f"Exporting to ONNX needs {', '.join(missing)} on the registry host; install the worker extra "
            "(pip install 'model-service-platform[worker]' -c constraints.txt).", code="onnx_export_unavailable")


def export_onnx(catalog: Catalog, model_id: str, revision: str | None = None, quantize: Quantize = None,
                progress: Progress | None = None, tmp_dir: Path | None = None, *,
                make_current: bool = False) -> Manifest:
    """Store the ONNX export of ``model_id@revision`` (default ``current``) as its own revision and
    return its manifest; an export already stored is returned as is. The new revision becomes
    ``current`` only with ``make_current`` (workers pin it with ``MODEL_REVISION`` otherwise)."""
    validate_model_id(model_id)
    if quantize not in (None, "int8"):
        raise InvalidRequestError(f"Unknown quantization '{quantize}': use int8 or none.", param="quantize")
    check_export_packages()
    source_rev = catalog.resolve(model_id, revision)
    manifest = catalog.manifest(model_id, source_rev)
    if manifest.model_type not in (None, "embedding"):
        raise InvalidRequestError(f"Only embedding models export to ONNX; '{model_id}' is stored as "
                                  f"'{manifest.model_type}'.", param="model_id", code="onnx_export_unsupported")
    if any(f.path == ONNX_FILE for f in manifest.files) and not any(f.path.endswith(".safetensors")
                                                                   for f in manifest.files):
        raise InvalidRequestError(f"'{model_id}@{source_rev}' is already an ONNX export.", param="revision")
    target = onnx_revision(source_rev, quantize)
    if catalog.is_complete(model_id, target):
        return catalog.manifest(model_id, target)
    with tempfile.TemporaryDirectory(prefix="onnx-export-", dir=tmp_dir) as scratch:
        source = fetch_model(catalog.store, model_id, source_rev, Path(scratch) / "source")
        out = Path(scratch) / "export"
        copy_runtime_files(source, out)
        export_graph(source, out / ONNX_FILE, quantize, Path(scratch))
        origin: dict[str, Any] = {"kind": "onnx-export", "from_revision": source_rev,
                                  "quantization": quantize or "none", "opset": OPSET, "file": ONNX_FILE}
        return import_folder(catalog, model_id, out, "embedding", progress, revision=target, source=origin,
                             make_current=make_current)


def copy_runtime_files(source: Path, out: Path) -> None:
    """Everything but the weights: tokenizer, configs, pooling settings, README."""
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if not path.is_file() or rel.parts[0] in _NOT_COPIED_DIRS or path.name.endswith(_NOT_COPIED):
            continue
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, out / rel)


def export_graph(folder: Path, target: Path, quantize: Quantize, scratch: Path) -> None:
    """Trace the sentence-transformers pipeline in ``folder`` into ``target`` (int8 quantised if asked)."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu", model_kwargs={"dtype": torch.float32}).eval()
    sample = model.tokenizer(["an example sentence to trace", "and a second"], padding=True, return_tensors="pt")
    names = [n for n in _INPUTS if n in sample]
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in names}
    target.parent.mkdir(parents=True, exist_ok=True)
    fp32 = scratch / "fp32.onnx" if quantize else target
    with torch.inference_mode(), warnings.catch_warnings():
        # The tracer warns about every shape check it freezes; the ones here hold for any input
        # shape (the export's quality check over 200 sentences is in the tests).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")  # indices are never negative
        torch.onnx.export(_pipeline(model, names), tuple(sample[n] for n in names), str(fp32),
                          input_names=names, output_names=["sentence_embedding"],
                          dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
    if quantize:
        quantize_int8(fp32, target)
    tag(target, quantization=quantize or "float32")


def tag(path: Path, **metadata: str) -> None:
    """Write ``metadata`` into the graph's metadata (the worker reports the quantization it reads there)."""
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, metadata)
    onnx.save(model, str(path))


def quantize_int8(fp32: Path, target: Path) -> None:
    """Dynamic int8: MatMul weights per channel, activations quantised per batch at run time."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep_fp32 = [node.name for node in onnx.load(str(fp32), load_external_data=False).graph.node
                 if node.op_type == "MatMul" and "/output/dense/" in node.name and "attention" not in node.name]
    quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QUInt8, per_channel=True,
                     op_types_to_quantize=["MatMul"], nodes_to_exclude=keep_fp32)


def _pipeline(model: Any, names: list[str]) -> Any:
    """The sentence-transformers modules as one ``forward(tensors...) -> sentence_embedding`` module
    (built here: torch is imported only when an export runs)."""
    import torch

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> Any:
            return self.model(dict(zip(names, tensors, strict=True)))["sentence_embedding"]

    return Pipeline()
