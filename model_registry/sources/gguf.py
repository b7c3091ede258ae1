"""Import a GGUF file: convert it once into a normal Hugging Face folder, then store that folder.

Loading GGUF through transformers dequantises every tensor on each load (~20 s for a 135M model on a
small CPU), so the registry does it once: the weights are dequantised, saved as bf16 safetensors with
the tokenizer, and stored as an ordinary revision that any worker loads in under a second. The
manifest's ``source`` records the GGUF file name, size and sha256, so the revision can be traced back.

Conversion needs the worker extra (torch, transformers, gguf); they are imported lazily and their
absence is a 400 that says what to install, never an ``ImportError`` deep inside a job.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import tempfile
import uuid
from pathlib import Path

from common.errors import InvalidRequestError
from common.records import ModelType
from model_registry.catalog import Catalog
from model_registry.ids import validate_model_id
from model_registry.ingest import Progress
from model_registry.records import Manifest
from model_registry.sources.folder import import_folder
from model_registry.storage import file_sha256

GGUF_MAGIC = b"GGUF"
CONVERSION_PACKAGES = ("torch", "transformers", "gguf")


def is_gguf_path(path: str | Path) -> bool:
    return str(path).lower().endswith(".gguf")


def check_gguf(path: str | Path) -> Path:
    """The GGUF file to import, or a 400 naming what is wrong (path, magic bytes, missing packages)."""
    file = Path(path).expanduser()
    if not file.is_absolute():
        raise InvalidRequestError(f"The import path '{path}' must be absolute.", param="path")
    if not file.is_file():
        raise InvalidRequestError(f"The GGUF file '{path}' does not exist on the registry host.", param="path")
    with open(file, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise InvalidRequestError(f"'{path}' is not a GGUF file (no GGUF magic bytes).", param="path",
                                      code="invalid_gguf")
    missing = [p for p in CONVERSION_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise InvalidRequestError(
            f"Converting a GGUF file needs {', '.join(missing)} on the registry host; install the worker "
            "extra (pip install 'model-service-platform[worker]' -c constraints.txt) or convert elsewhere "
            "and import the folder.", param="path", code="gguf_conversion_unavailable")
    return file


def gguf_fingerprint(file: Path) -> str:
    """Revision name from name, size and mtime (like a folder's), so re-importing lands on the same one."""
    st = file.stat()
    digest = hashlib.sha256(f"{file.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return "gguf-" + digest.hexdigest()[:16]


def convert_gguf(gguf_path: Path, target: Path) -> None:
    """Dequantise a GGUF checkpoint and save it as a bf16 safetensors folder (with its tokenizer).

    Writes into a temporary sibling and renames it into place, so ``target`` is either absent or
    whole. The caller decides about ``HF_HUB_OFFLINE``; the sources here are local files only.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not gguf_path.is_file():
        raise InvalidRequestError(f"GGUF file not found: {gguf_path}", param="path")
    tmp = target.with_name(f"{target.name}.tmp-{uuid.uuid4().hex[:12]}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                     dtype=torch.float32)
        # The weights are dequantised now: drop the GGUF quantizer so save_pretrained writes plain tensors.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.to(torch.bfloat16)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def import_gguf(catalog: Catalog, model_id: str, gguf_file: str | Path, model_type: ModelType | None = None,
                progress: Progress | None = None, revision: str | None = None,
                tmp_dir: Path | None = None) -> Manifest:
    """Convert ``gguf_file`` in a scratch folder and store the result as one revision (skipped if complete)."""
    validate_model_id(model_id)
    if model_type not in (None, "llm"):
        raise InvalidRequestError("A GGUF file converts to a causal language model: use type 'llm'.",
                                  param="model_type")
    file = check_gguf(gguf_file)
    revision = revision or gguf_fingerprint(file)
    if catalog.is_complete(model_id, revision):
        return catalog.manifest(model_id, revision)
    source = {"kind": "gguf", "file": file.name, "path": str(file), "size": file.stat().st_size,
              "sha256": file_sha256(file), "converted_to": "bf16 safetensors"}
    with tempfile.TemporaryDirectory(prefix="gguf-convert-", dir=tmp_dir) as scratch:
        folder = Path(scratch) / "model"
        convert_gguf(file, folder)
        return import_folder(catalog, model_id, folder, "llm", progress, revision=revision, source=source)

