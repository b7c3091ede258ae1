"""Fixtures shared by every test layer: the real starter models and free loopback ports."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Gateways built by tests (in-process and the stacks they start) keep their key file and usage log in
# a throw-away folder, not in the shared model-service home next to the cached starter models.
_GATEWAY_STATE = Path(tempfile.mkdtemp(prefix="msp-test-gateway-"))
os.environ.setdefault("GATEWAY_KEYS_FILE", str(_GATEWAY_STATE / "keys.json"))
os.environ.setdefault("GATEWAY_USAGE_LOG", str(_GATEWAY_STATE / "usage.log"))


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports: every socket stays open until all are picked, so the
    kernel cannot hand out the same port twice in one call."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="session")
def smollm_path() -> Path:
    """The real SmolLM2-135M-Instruct chat model as a normal HF folder (converted once, cached)."""
    from stack.starters import STARTER_LLM, prepare

    return prepare(STARTER_LLM)


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The real all-MiniLM-L6-v2 sentence-transformers folder shipped by a PyPI package."""
    from stack.starters import STARTER_EMBEDDING, prepare

    return prepare(STARTER_EMBEDDING)


@pytest.fixture(scope="session")
def whisper_path() -> Path:
    """The real whisper-base CTranslate2 folder, joined once from its two PyPI part packages."""
    from stack.starters import STARTER_TRANSCRIPTION, prepare

    return prepare(STARTER_TRANSCRIPTION)


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real speech: espeak-ng saying the pangram (scripts/ci-deps.sh installs espeak-ng)."""
    import shutil
    import subprocess

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (run scripts/ci-deps.sh)")
    out = tmp_path_factory.mktemp("speech") / "fox.wav"
    subprocess.run(["espeak-ng", "-w", str(out), "The quick brown fox jumps over the lazy dog"], check=True,
                   timeout=60)
    return out
