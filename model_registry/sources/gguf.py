"""Import a GGUF file: as is, for the llamacpp engine, or converted once into a Hugging Face folder.

Stored as is (``import_gguf(..., as_is=True)``, ``models import x.gguf --as-is``), the file is one
object of the revision like any other (sha256-verified on every fetch), with its quantization type in
the manifest's ``source``; a worker fetching it gets a folder holding the ``.gguf``, which ``auto``
runs on llama.cpp. Converted (the default), it is served by the transformers engine.

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
from common.gguf_meta import file_type_name
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


def check_gguf(path: str | Path, convert: bool = True) -> Path:
    """The GGUF file to import, or a 400 naming what is wrong (path, magic bytes, and for a conversion
    missing packages)."""
    file = Path(path).expanduser()
    if not file.is_absolute():
        raise InvalidRequestError(f"The import path '{path}' must be absolute.", param="path")
    if not file.is_file():
        raise InvalidRequestError(f"The GGUF file '{path}' does not exist on the registry host.", param="path")
    with open(file, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise InvalidRequestError(f"'{path}' is not a GGUF file (no GGUF magic bytes).", param="path",
                                      code="invalid_gguf")
    missing = [p for p in CONVERSION_PACKAGES if convert and importlib.util.find_spec(p) is None]
    if missing:
        raise InvalidRequestError(
            f"Converting a GGUF file needs {', '.join(missing)} on the registry host; install the worker "
            "extra (pip install 'model-service-platform[worker]' -c constraints.txt) or convert elsewhere "
            "and import the folder.", param="path", code="gguf_conversion_unavailable")
    return file


def gguf_fingerprint(file: Path, prefix: str = "gguf-") -> str:
    """Revision name from name, size and mtime (like a folder's), so re-importing lands on the same one."""
    st = file.stat()
    digest = hashlib.sha256(f"{file.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return prefix + digest.hexdigest()[:16]


def gguf_quantization(file: Path) -> str | None:
    """The file's quantization type from its ``general.file_type`` (``Q4_1``, ``F16``...); None when
    the file does not say or the ``gguf`` package is not installed."""
    if importlib.util.find_spec("gguf") is None:
        return None
    from gguf import GGUFReader

    return file_type_name(GGUFReader(file).fields)


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
                tmp_dir: Path | None = None, as_is: bool = False) -> Manifest:
    """Store ``gguf_file`` as one revision (skipped if complete): the file itself with ``as_is``,
    else the Hugging Face folder it converts to in a scratch folder."""
    validate_model_id(model_id)
    if model_type not in (None, "llm"):
        raise InvalidRequestError("A GGUF file holds a causal language model: use type 'llm'.",
                                  param="model_type")
    file = check_gguf(gguf_file, convert=not as_is)
    revision = revision or gguf_fingerprint(file, "gguf-file-" if as_is else "gguf-")
    if catalog.is_complete(model_id, revision):
        return catalog.manifest(model_id, revision)
    source = {"kind": "gguf", "file": file.name, "path": str(file), "size": file.stat().st_size,
              "sha256": file_sha256(file)}
    with tempfile.TemporaryDirectory(prefix="gguf-import-", dir=tmp_dir) as scratch:
        folder = Path(scratch) / "model"
        if as_is:  # a folder with a link to the file: the folder source stores (and hashes) the file itself
            folder.mkdir()
            (folder / file.name).symlink_to(file)
            source.update(stored="as is", quantization=gguf_quantization(file))
        else:
            convert_gguf(file, folder)
            source["converted_to"] = "bf16 safetensors"
        return import_folder(catalog, model_id, folder, "llm", progress, revision=revision, source=source)

