"""Export a stored embedding or rerank model to ONNX once, in the registry, as a revision of its own.

A worker with ``--engine onnx`` (or ``auto`` on such a revision) then runs ONNX Runtime on the stored
graph: air-gapped sites never export at start-up, and every file of the export (the graph, the
tokenizer, the configs) is sha256-verified on each fetch like any other revision.

The export reads a stored revision back (verified), traces it into one graph (``onnx_graph``: the
whole sentence-transformers pipeline for an embedding model, the cross-encoder's pair-to-logits
classifier for a rerank model), and stores it as ``onnx/model.onnx`` next to the tokenizer and
configs, without the torch weights, under the source's model type. ``quantize="int8"`` stores ONNX
Runtime's dynamic int8 quantisation of that graph instead (``onnx_graph`` says which layers stay fp32
and why).

Why ``torch.onnx.export`` and not optimum: ``optimum-onnx`` pins ``transformers<4.58`` and the
project runs transformers 5, and exporting these models needs nothing optimum adds.
The exporter needs the worker extra (torch, sentence-transformers, onnx) on the registry host; their
absence is a 400 that says so, never an ``ImportError`` inside a job.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path
from typing import Any

from common.errors import InvalidRequestError
from model_registry.catalog import Catalog
from model_registry.fetch import fetch_model
from model_registry.ids import validate_model_id
from model_registry.ingest import Progress
from model_registry.records import Manifest
from model_registry.sources.folder import import_folder
from model_registry.sources.onnx_graph import OPSET, Quantize, export_embedding_graph, export_rerank_graph

EXPORT_PACKAGES = ("torch", "sentence_transformers", "onnx", "onnxruntime")
ONNX_FILE = "onnx/model.onnx"
# Torch weights and other runtimes' copies are left out of the ONNX revision: only the graph runs.
_NOT_COPIED = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ot", ".onnx", ".onnx_data")
_NOT_COPIED_DIRS = frozenset({"onnx", "openvino"})
# The model types that export, and how each is traced.
GRAPH_EXPORTERS = {"embedding": export_embedding_graph, "rerank": export_rerank_graph}


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
    model_type = manifest.model_type or "embedding"
    if model_type not in GRAPH_EXPORTERS:
        raise InvalidRequestError(f"Only embedding and rerank models export to ONNX; '{model_id}' is stored "
                                  f"as '{model_type}'.", param="model_id", code="onnx_export_unsupported")
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
        GRAPH_EXPORTERS[model_type](source, out / ONNX_FILE, quantize, Path(scratch))
        origin: dict[str, Any] = {"kind": "onnx-export", "from_revision": source_rev,
                                  "quantization": quantize or "none", "opset": OPSET, "file": ONNX_FILE}
        return import_folder(catalog, model_id, out, model_type, progress, revision=target, source=origin,
                             make_current=make_current)


def copy_runtime_files(source: Path, out: Path) -> None:
    """Everything but the weights: tokenizer, configs, pooling settings, README."""
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if not path.is_file() or rel.parts[0] in _NOT_COPIED_DIRS or path.name.endswith(_NOT_COPIED):
            continue
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, out / rel)
