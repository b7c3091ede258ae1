"""Engine servers the e2e tests need (``llama-server`` and its GGUF converter, the vLLM venv): present,
or a clear verdict.

``make test`` builds or installs them first, so there a missing one is a broken set-up and the tests
fail saying which ``make`` target to run (``MODEL_SERVICE_REQUIRE_ENGINES=1``, which the Makefile
sets, or ``CI`` set). Run by hand on a machine without them, the tests are skipped with that reason,
which pytest's summary (``-rs``) shows.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from model_service.engine_paths import find_gguf_converter, find_llama_server, find_vllm_python


def _required() -> bool:
    return os.environ.get("MODEL_SERVICE_REQUIRE_ENGINES") == "1" or bool(os.environ.get("CI"))


def require(found: Path | None, what: str, target: str) -> Path:
    """``found`` if it is there; else fail (``make test``, CI) or skip (by hand) naming ``target``."""
    if found is not None:
        return found
    message = f"{what} is not installed on this machine: run `make {target}` once"
    if _required():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def vllm_python() -> Path:
    return require(find_vllm_python(), "the vLLM venv", "vllm-venv")


def llama_server() -> Path:
    return require(find_llama_server(), "llama-server", "llama-server")


def gguf_converter() -> Path:
    return require(find_gguf_converter(), "llama.cpp's GGUF converter", "llama-server")
