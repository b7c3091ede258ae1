"""`model-service up` starts every service, and stopping it leaves no process behind."""

from __future__ import annotations

import signal
import socket
import time

import httpx
import psutil
import pytest

from tests.helpers.stack import start_stack

pytestmark = pytest.mark.e2e


def _port_open(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, int(port))) == 0


def _gone(procs: list[psutil.Process], timeout: float = 15.0) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stop_signal_stops_every_child(tmp_path, sig):
    stack = start_stack(tmp_path, "--engine", "fake")
    children = stack.descendants()
    assert len(children) >= 6, stack.log()
    assert httpx.get(f"{stack.base_url}/models", timeout=5).status_code == 200
    assert stack.stop(sig) == 0, stack.log()
    assert _gone(children) == []
    for url in (stack.gateway_url, stack.llm_url, stack.embedding_url, stack.registry_url, stack.model_registry_url,
                stack.transcription_url):
        assert not _port_open(url)


def test_killed_supervisor_takes_children_with_it(tmp_path):
    stack = start_stack(tmp_path, "--engine", "fake")
    children = stack.descendants()
    assert children
    stack.proc.kill()
    stack.proc.wait(timeout=10)
    assert _gone(children) == []


def test_worker_crash_stops_the_stack(tmp_path):
    stack = start_stack(tmp_path, "--engine", "fake")
    children = stack.descendants()
    worker = next(p for p in children if str(stack.llm_url.rsplit(":", 1)[1]) in " ".join(p.cmdline()))
    worker.kill()
    deadline = time.monotonic() + 30
    while stack.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stack.proc.returncode == 1, stack.log()
    assert "exited" in stack.log()
    assert _gone(children) == []
