"""Fixtures shared by every test layer: the real starter models and a real S3 server."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.model_registry import BACKENDS, registry_settings, small_copy
from tests.helpers.s3 import S3Server, seaweedfs

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Gateways built by tests (in-process and the stacks they start) keep their key file and usage log in
# a throw-away folder, not in the shared model-service home next to the cached starter models.
_GATEWAY_STATE = Path(tempfile.mkdtemp(prefix="msp-test-gateway-"))
os.environ.setdefault("GATEWAY_KEYS_FILE", str(_GATEWAY_STATE / "keys.json"))
os.environ.setdefault("GATEWAY_USAGE_LOG", str(_GATEWAY_STATE / "usage.log"))


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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server (SeaweedFS), one per session; each test takes a fresh bucket on it."""
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(params=BACKENDS)
def backend_settings(request: pytest.FixtureRequest, tmp_path: Path):
    """Model registry settings parametrized over the local-folder and the real-S3 backend."""
    s3 = request.getfixturevalue("s3_server") if request.param == "s3" else None
    return registry_settings(request.param, tmp_path, s3)


@pytest.fixture
def small_model(minilm_path: Path, tmp_path: Path) -> Path:
    """The MiniLM folder without its 90 MB weights (plus a 1 MiB stand-in), for tests about mechanics."""
    return small_copy(minilm_path, tmp_path / "small")
