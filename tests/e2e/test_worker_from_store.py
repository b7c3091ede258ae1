"""Real processes, real model, real stores: a worker starts from the model store and serves through the
gateway to the openai SDK; one flipped byte in a stored object makes a new worker refuse to start.

Per backend (a local folder, SeaweedFS S3): ``model-service models import`` (the CLI, as a user types
it) puts the real MiniLM folder in the store; ``model-service worker --model-source store`` fetches,
verifies and loads it; ``model-service gateway --workers URL`` routes the SDK's request to it. A worker
whose store copy is corrupt stays up and answers ``/health`` 503 naming the file (chosen over exiting,
so the service registry and an operator see the reason instead of a restart loop).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from model_registry.catalog import Catalog, file_key
from model_registry.storage import open_storage
from tests.helpers.model_registry import BACKENDS, registry_env, registry_settings
from tests.helpers.ports import free_port
from tests.helpers.processes import process, settled_health

pytestmark = pytest.mark.e2e
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def worker_argv(port: int) -> list[str]:
    return ["worker", "--port", str(port), "--model-source", "store", "--model-name", MODEL,
            "--model-type", "embedding", "--log-level", "info"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_worker_from_store_through_gateway_then_refuses_a_flipped_byte(
        backend: str, request: pytest.FixtureRequest, minilm_path: Path, tmp_path: Path) -> None:
    s3 = request.getfixturevalue("s3_server") if backend == "s3" else None
    settings = registry_settings(backend, tmp_path, s3)
    env = {**registry_env(settings), "HF_HUB_OFFLINE": "1", "WORKER_CACHE_DIR": str(tmp_path / "cache")}
    imported = subprocess.run([sys.executable, "-m", "stack", "models", "import", str(minilm_path), "--id", MODEL,
                               "--type", "embedding"], env={**os.environ, **env}, capture_output=True, timeout=300)
    assert imported.returncode == 0, imported.stderr.decode()[-2000:]

    worker_port, gateway_port = free_port(), free_port()
    worker_url = f"http://127.0.0.1:{worker_port}"
    with process(worker_argv(worker_port), env, tmp_path / "worker.log") as worker:
        health = settled_health(worker_url, worker, tmp_path / "worker.log")
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text
        gateway_argv = ["gateway", "--port", str(gateway_port), "--workers", worker_url, "--log-level", "warning"]
        with process(gateway_argv, {}, tmp_path / "gateway.log") as gateway:
            settled_health(f"http://127.0.0.1:{gateway_port}", gateway, tmp_path / "gateway.log")
            with openai.OpenAI(base_url=f"http://127.0.0.1:{gateway_port}/v1", api_key="unused", max_retries=3,
                               timeout=60) as client:
                resp = client.embeddings.create(model=MODEL, input=["offline first", "verified weights"])
    assert [len(d.embedding) for d in resp.data] == [384, 384] and resp.model == MODEL

    store = open_storage(settings)
    catalog = Catalog(store)
    key = file_key(MODEL, catalog.resolve(MODEL), "model.safetensors")
    data = bytearray(store.get_bytes(key))
    data[len(data) // 2] ^= 0x01  # one flipped bit in the middle of the weights
    store.put_bytes(key, bytes(data))
    store.close()
    env["WORKER_CACHE_DIR"] = str(tmp_path / "fresh-cache")  # a new host: nothing cached yet
    log_path = tmp_path / "worker-bad.log"
    with process(worker_argv(worker_port), env, log_path) as worker:
        health = settled_health(worker_url, worker, log_path)
        assert health.status_code == 503, health.text
        error = health.json()["error"]
        assert error["code"] == "model_load_failed"
        assert "Checksum mismatch for file 'model.safetensors'" in error["message"], error
        assert worker.poll() is None  # stays up, reporting the reason
    assert "Checksum mismatch for file 'model.safetensors'" in log_path.read_text()
