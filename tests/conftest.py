"""Fixtures shared by every test layer: the real starter models, a real S3 server, and the ``e2e`` marker.

Every test that uses real parts (a real model, a real S3 server, an OS process) carries the ``e2e``
marker, so ``make test-fast`` (``-m "not e2e"``) leaves them out and ``make test`` runs them all. Tests
that depend on one of :data:`REAL_PART_FIXTURES` get it here, automatically; modules that start
processes without such a fixture say ``pytestmark = pytest.mark.e2e`` themselves.
"""

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

# Fixtures that load a real model, start a process or a real S3 server, or depend on one that does
# (pytest lists the fixtures a test needs, directly or not, in ``item.fixturenames``).
REAL_PART_FIXTURES = frozenset({"smollm_path", "minilm_path", "whisper_path", "speech_wav", "s3_server"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses real parts ``e2e``, including the S3 half of ``backend_settings``."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if REAL_PART_FIXTURES.intersection(getattr(item, "fixturenames", ())) or params.get("backend_settings") == "s3":
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def smollm_path() -> Path:
    """The real SmolLM2-135M-Instruct chat model as a normal HF folder (converted once, cached)."""
    from stack.starters import STARTER_LLM, prepare

    return prepare(STARTER_LLM)


@pytest.fixture(scope="session")
def gguf_exports(smollm_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """SmolLM2 in a local store with its Q8_0 GGUF conversion (llama.cpp's converter), fetched (built once)."""
    from tests.helpers.engines import gguf_converter
    from tests.helpers.gguf import export_smollm

    gguf_converter()
    return export_smollm(smollm_path, tmp_path_factory.mktemp("gguf-store"))


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
