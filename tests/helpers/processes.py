"""Services as real OS processes: workers, the service registry, an external upstream, any ``stack`` command.

Every process runs on 127.0.0.1 on a port picked once, so a restarted process comes back at the same
address; its output goes to a log file that a failing start-up quotes. The tests that use them stop
everything they started, killed or not.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.ports import free_port

REPO = Path(__file__).resolve().parents[2]
START_LIMIT_S = 60.0
SETTLE_LIMIT_S = 180.0  # a real model loads, from a store it may first fetch


class Proc:
    """One child process that can be started, SIGKILLed and started again on the same port."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, log_dir: Path,
                 ready_path: str = "/health") -> None:
        self.name, self.argv, self.env, self.port = name, argv, env, port
        self.url = f"http://127.0.0.1:{port}"
        self.ready_path = ready_path
        self.log = log_dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with self.log.open("ab") as log:
            self.popen = subprocess.Popen(self.argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_ready(self, limit_s: float = START_LIMIT_S, headers: dict[str, str] | None = None) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited; log:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=1.0, headers=headers).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready in {limit_s}s; log:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """``kill -9``: no shutdown, no deregistration, connections cut."""
        if self.popen is not None and self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


def python_m(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def registry_proc(log_dir: Path, statics: list[dict[str, Any]] | None = None, poll_s: float = 0.2) -> Proc:
    port = free_port()
    env = {"REGISTRY_POLL_INTERVAL_S": str(poll_s), "REGISTRY_PROBE_TIMEOUT_S": "1.0",
           "REGISTRY_UNHEALTHY_AFTER": "2", "REGISTRY_HEALTHY_AFTER": "1",
           "REGISTRY_STATIC_UPSTREAMS": json.dumps(statics or [])}
    argv = python_m("stack", "service-registry", "--port", str(port), "--log-level", "warning")
    return Proc("registry", argv, env, port, log_dir)


def worker_proc(name: str, model: str, registry_url: str, log_dir: Path, **env: str) -> Proc:
    """A worker that registers itself; ``env`` adds WORKER_* settings (fake engine unless MODEL_PATH)."""
    port = free_port()
    engine = "auto" if "MODEL_PATH" in env else "fake"
    settings = {"WORKER_HEARTBEAT_INTERVAL_S": "0.5", "WORKER_ID": name, **env}
    argv = python_m("stack", "worker", "--engine", engine, "--port", str(port), "--model-name", model,
                    "--registry-url", registry_url, "--log-level", "warning")
    return Proc(name, argv, settings, port, log_dir)


def external_proc(log_dir: Path, key: str, upstream_model: str) -> Proc:
    port = free_port()
    argv = python_m("uvicorn", "--factory", "tests.helpers.fake_openai_upstream:create_app",
                    "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning")
    return Proc("external", argv, {"FAKE_UPSTREAM_KEY": key, "FAKE_UPSTREAM_MODEL": upstream_model}, port,
                log_dir, ready_path="/stats")


def registry_services(registry_url: str) -> dict[str, dict[str, Any]]:
    """The registry's records by id ({} while it is down)."""
    try:
        data = httpx.get(f"{registry_url}/services", timeout=2.0).json()["data"]
    except (httpx.HTTPError, ValueError, KeyError):
        return {}
    return {row["id"]: row for row in data}


def healthy_in_registry(registry_url: str, ids: list[str]) -> Callable[[], bool]:
    def check() -> bool:
        rows = registry_services(registry_url)
        return all(rows.get(i, {}).get("status") == "healthy" for i in ids)

    return check


@contextmanager
def process(argv: list[str], env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """One ``python -m stack ...`` child in its own process group, stopped (TERM, then KILL) on exit."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "stack", *argv], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **env, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def settled_health(url: str, proc: subprocess.Popen[bytes], log_path: Path,
                   limit_s: float = SETTLE_LIMIT_S) -> httpx.Response:
    """Poll ``/health`` until it is no longer loading (ready, or failed for good); bounded in time."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}"
        try:
            resp = httpx.get(f"{url}/health", timeout=5)
            if resp.status_code == 200 or resp.json().get("error", {}).get("code") != "model_loading":
                return resp
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{url} did not settle in {limit_s} s:\n{log_path.read_text()[-3000:]}")
