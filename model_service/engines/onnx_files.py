"""Where an ONNX revision keeps its graph, and whether a folder is one; pathlib only, so ``engine=auto``
can ask at settings time without importing ONNX Runtime or torch."""

from __future__ import annotations

from pathlib import Path

ONNX_FILES = ("onnx/model.onnx", "model.onnx")


def onnx_file(folder: str | Path) -> Path | None:
    """The graph an ONNX revision holds (``onnx/model.onnx``, or ``model.onnx`` at the top)."""
    root = Path(folder)
    return next((root / name for name in ONNX_FILES if (root / name).is_file()), None)


def is_onnx_folder(folder: str | Path) -> bool:
    """A folder only ONNX Runtime runs: an ONNX graph and no torch weights beside it (a full Hugging
    Face mirror that also ships an ``onnx/`` folder stays on torch unless ``--engine onnx`` says so)."""
    root = Path(folder)
    if not root.is_dir() or onnx_file(root) is None:
        return False
    return not any(root.glob("*.safetensors")) and not (root / "pytorch_model.bin").exists()
