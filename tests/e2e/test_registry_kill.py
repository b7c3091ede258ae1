"""``kill -9`` the model registry mid-download: nothing is listed ready; a restart finishes or cleans up.

The registry runs as a real process (``python -m stack model-registry``) on a local-folder store and
mirrors a repo from a fake Hub in this test process whose weights file trickles out slowly, so the kill
lands while the job is running. After the kill the store holds a partial revision (no complete
manifest) and a job record that still says ``running``; the restarted registry either resumes the job
to a verified revision (default) or, with ``MODEL_REGISTRY_RESUME_JOBS=false``, fails it and deletes
the partial files.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from model_registry.catalog import Catalog
from model_registry.fetch import fetch_model
from model_registry.storage import open_storage
from tests.helpers.model_registry import registry_settings
from tests.helpers.ports import free_port
from tests.helpers.servers import serve_in_thread

pytestmark = pytest.mark.e2e
REPO = "acme/slow-model"
SHA = hashlib.sha1(b"slow").hexdigest()
WEIGHTS = os.urandom(8 * 1024 * 1024)
CONFIG = json.dumps({"model_type": "bert"}).encode()
CHUNK, CHUNK_DELAY_S = 64 * 1024, 0.02  # 8 MiB in ~2.6 s


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class SlowHub:
    """The two Hub endpoints huggingface_hub calls (repo info with the LFS sha256, file resolve); the
    weights trickle out and the bytes sent so far are counted, so the test can kill at a known point."""

    def __init__(self) -> None:
        self.url = ""
        self.weights_sent = 0
        self.files = {"config.json": (CONFIG, git_blob_id(CONFIG)),
                      "model.safetensors": (WEIGHTS, hashlib.sha256(WEIGHTS).hexdigest())}

    async def trickle(self, data: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(data), CHUNK):
            await asyncio.sleep(CHUNK_DELAY_S)
            if data is WEIGHTS:
                self.weights_sent = start + CHUNK
            yield data[start:start + CHUNK]

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        if path.startswith(f"/api/models/{REPO}/revision/"):
            siblings = [{"rfilename": name, "size": len(data), "blobId": git_blob_id(data)}
                        for name, (data, _) in self.files.items()]
            siblings[1]["lfs"] = {"size": len(WEIGHTS), "sha256": self.files["model.safetensors"][1],
                                  "pointerSize": 134}
            return JSONResponse({"id": REPO, "sha": SHA, "siblings": siblings})
        name = path.rpartition("/")[2]
        if not path.startswith(f"/{REPO}/resolve/") or name not in self.files:
            return Response(status_code=404, headers={"X-Error-Code": "EntryNotFound"})
        data, etag = self.files[name]
        headers = {"X-Repo-Commit": SHA, "ETag": f'"{etag}"', "Content-Length": str(len(data)),
                   "Content-Type": "application/octet-stream"}
        if request.method == "HEAD":
            return Response(b"", headers=headers)
        return StreamingResponse(self.trickle(data), headers=headers)


@pytest.fixture
def slow_hub() -> Iterator[SlowHub]:
    hub = SlowHub()
    app = Starlette(routes=[Route("/{path:path}", hub.handle, methods=["GET", "HEAD"])])
    with serve_in_thread(app) as url:
        hub.url = url
        yield hub


@contextmanager
def registry_process(env: dict[str, str], port: int, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m stack model-registry`` in its own process group; waits for ``/health``."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "stack", "model-registry", "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def wait_job(url: str, job_id: str, until, limit_s: float = 60.0) -> dict:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/jobs/{job_id}", timeout=5).json()
        if until(job):
            return job
        time.sleep(0.05)
    pytest.fail(f"job {job_id} never reached the expected state: {job}")


@pytest.mark.parametrize("resume", [True, False], ids=["resume", "cleanup"])
def test_kill_mid_download_then_restart(resume: bool, slow_hub: SlowHub, tmp_path: Path) -> None:
    settings = registry_settings("local", tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(MODEL_REGISTRY_STORAGE_BACKEND="local", MODEL_REGISTRY_LOCAL_ROOT=str(settings.local_root),
               MODEL_REGISTRY_TMP_DIR=str(tmp_path), MODEL_REGISTRY_HF_ENDPOINT=slow_hub.url,
               HF_HOME=str(tmp_path / "hf"), PYTHONUNBUFFERED="1")
    port, log_path = free_port(), tmp_path / "registry.log"
    url = f"http://127.0.0.1:{port}"
    with registry_process(env, port, log_path) as proc:
        job = httpx.post(f"{url}/models/{REPO}/download", json={"revision": "main"}, timeout=10).json()
        deadline = time.monotonic() + 60
        while slow_hub.weights_sent < len(WEIGHTS) // 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(WEIGHTS) // 4 <= slow_hub.weights_sent < len(WEIGHTS) // 2  # about a quarter through
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    store = open_storage(settings)
    catalog = Catalog(store)
    assert catalog.list_models() == [] and not catalog.is_complete(REPO, SHA)
    assert store.list(f"{REPO}/revisions/{SHA}/")  # something half-written is there, unlisted
    assert store.get_json(f"_jobs/{job['id']}.json")["state"] == "running"

    if not resume:
        env["MODEL_REGISTRY_RESUME_JOBS"] = "false"
    with registry_process(env, port, log_path):
        listed = httpx.get(f"{url}/models", timeout=5).json()["data"]
        assert all(m["status"] != "ready" for m in listed), listed
        done = wait_job(url, job["id"], lambda j: j["state"] in ("done", "failed"))
        models = httpx.get(f"{url}/models", timeout=5).json()["data"]
    if resume:
        assert done["state"] == "done" and done["resumed"] == 1 and done["resolved_revision"] == SHA, done
        assert [(m["id"], m["status"], m["current"]) for m in models] == [(REPO, "ready", SHA)]
        folder = fetch_model(store, REPO, None, tmp_path / "cache")  # every file verified again
        assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    else:
        assert done["state"] == "failed" and "Interrupted by a registry restart" in done["error"], done
        assert models == [] and store.list(f"{REPO}/revisions/") == []
    store.close()
