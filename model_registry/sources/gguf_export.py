"""Convert a stored Hugging Face LLM to GGUF once, in the registry, as a revision of its own.

A worker with ``--engine auto`` (or ``llamacpp``) on that revision runs llama.cpp's ``llama-server``
on CPU hosts: the revision holds the one ``.gguf`` file and no ``config.json``, exactly like a GGUF
imported ``--as-is``, so ``auto`` picks llamacpp from the fetched folder, and the file is
sha256-verified on every fetch like any other. An air-gapped site never needs a converter elsewhere.

The conversion is llama.cpp's own ``convert_hf_to_gguf.py`` from the llama-cpp-python sdist that
``llama-server`` is built from (``make llama-server`` sets it up beside the binary,
``engine_paths.gguf_converter_path``), run as a child of this interpreter (which has torch, numpy,
transformers and safetensors) with the sdist's ``gguf-py`` and the converter's own ``site/``
(sentencepiece) first on its path: the project's ``gguf`` may be another version than the one the
converter was written against. Its output is verbose, so it goes to a log file of which only the last
lines surface, in the error of a failed conversion.

Which type: ``q8_0`` (the default) and ``bf16`` have fast batched kernels in ggml-cpu (bf16 where the
CPU has AVX-512 BF16); ``f16``/``f32`` are there for other runtimes and for checking. docs/engines.md
has the figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path
from typing import Any, Literal, get_args

from common.errors import InvalidRequestError
from model_registry.catalog import Catalog
from model_registry.errors import GgufConversionError
from model_registry.fetch import fetch_model
from model_registry.ids import validate_model_id
from model_registry.ingest import Progress
from model_registry.records import Manifest
from model_registry.sources.folder import import_folder
from model_registry.sources.gguf import gguf_quantization, is_gguf_path
from model_service.engine_paths import find_gguf_converter

OutType = Literal["q8_0", "bf16", "f16", "f32"]
OUTTYPES: tuple[str, ...] = get_args(OutType)
# How often a running conversion checks whether its job is being stopped.
POLL_S = 0.5
LOG_LINES = 15


def gguf_revision(source_revision: str, outtype: str) -> str:
    """``gguf-q8_0-<source>``: exporting the same revision to the same type again is a no-op."""
    return f"gguf-{outtype}-{source_revision}"[:64]


def check_converter() -> Path:
    """The converter's folder, or a 400 that names the one command that sets it up."""
    folder = find_gguf_converter()
    if folder is None:
        raise InvalidRequestError(
            "Exporting to GGUF needs llama.cpp's converter on the registry host; run `make llama-server` "
            "once (it sets up the converter beside the llama-server binary).", code="gguf_export_unavailable")
    return folder


def check_exportable(catalog: Catalog, model_id: str, revision: str | None, outtype: str) -> Manifest:
    """The manifest of the revision to export, or the 400 that says why it cannot be (checked by the
    HTTP route before it starts a job, and again by the job)."""
    validate_model_id(model_id)
    if outtype not in OUTTYPES:
        raise InvalidRequestError(f"Unknown GGUF type '{outtype}': use one of {', '.join(OUTTYPES)}.",
                                  param="outtype")
    check_converter()
    manifest = catalog.manifest(model_id, catalog.resolve(model_id, revision))
    if manifest.model_type not in (None, "llm"):
        raise InvalidRequestError(f"Only llm models export to GGUF; '{model_id}' is stored as "
                                  f"'{manifest.model_type}'.", param="model_id", code="gguf_export_unsupported")
    paths = {f.path for f in manifest.files}
    if "config.json" not in paths and any(is_gguf_path(p) for p in paths):
        raise InvalidRequestError(f"'{model_id}@{manifest.revision}' is already a GGUF file; serve it as is.",
                                  param="revision")
    return manifest


def export_gguf(catalog: Catalog, model_id: str, revision: str | None = None, outtype: str = "q8_0",
                progress: Progress | None = None, tmp_dir: Path | None = None, *,
                make_current: bool = False) -> Manifest:
    """Store the GGUF conversion of ``model_id@revision`` (default ``current``) as its own revision and
    return its manifest; a conversion already stored is returned as is. The new revision becomes
    ``current`` only with ``make_current`` (workers pin it with ``MODEL_REVISION`` otherwise)."""
    source = check_exportable(catalog, model_id, revision, outtype)
    target = gguf_revision(source.revision, outtype)
    if catalog.is_complete(model_id, target):
        return catalog.manifest(model_id, target)
    progress = progress or Progress()
    with tempfile.TemporaryDirectory(prefix="gguf-export-", dir=tmp_dir) as scratch:
        folder = fetch_model(catalog.store, model_id, source.revision, Path(scratch) / "source")
        out = Path(scratch) / "export" / f"{model_id.rsplit('/', 1)[-1]}.{outtype.upper()}.gguf"
        out.parent.mkdir()
        convert(check_converter(), folder, out, outtype, Path(scratch) / "convert.log", progress,
                label=f"{model_id}@{source.revision}")
        origin: dict[str, Any] = {"kind": "gguf-export", "from_revision": source.revision, "file": out.name,
                                  "outtype": outtype, "stored": "as is", "quantization": gguf_quantization(out)}
        return import_folder(catalog, model_id, out.parent, "llm", progress, revision=target, source=origin,
                             make_current=make_current)


def convert(converter: Path, folder: Path, out: Path, outtype: str, log: Path, progress: Progress, *,
            label: str) -> None:
    """Run ``convert_hf_to_gguf.py`` on ``folder`` into ``out``; its output goes to ``log``. While it
    runs, the progress callback is poked every ``POLL_S`` (a job being stopped raises there, and the
    converter is killed); a failure raises, naming ``label`` and the converter's last lines, and
    leaves no ``out``."""
    env = {key: value for key, value in os.environ.items() if key != "NO_LOCAL_GGUF"}
    env.update(PYTHONPATH=os.pathsep.join([str(converter / "gguf-py"), str(converter / "site")]),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    argv = [sys.executable, str(converter / "convert_hf_to_gguf.py"), str(folder), "--outtype", outtype,
            "--outfile", str(out)]
    with open(log, "wb") as sink:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT, env=env)
        try:
            while child.poll() is None:
                progress.add_bytes(0)
                try:
                    child.wait(timeout=POLL_S)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    if child.returncode != 0 or not out.is_file():
        out.unlink(missing_ok=True)
        raise GgufConversionError(label, child.returncode, last_lines(log))


def last_lines(log: Path, count: int = LOG_LINES) -> str:
    """The log's last lines, progress bars (carriage-return redraws) reduced to their final state."""
    with open(log, encoding="utf-8", errors="replace") as f:
        tail = deque((line.rstrip("\n").rsplit("\r", 1)[-1] for line in f), maxlen=count)
    return "\n".join(line for line in tail if line.strip())
