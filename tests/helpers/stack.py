"""The whole stack, ``python -m stack up``, as one separate process on free ports (for end-to-end tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from stack.starters import STARTER_EMBEDDING, STARTER_LLM
from tests.helpers.ports import free_ports

READY_TIMEOUT_S = 240.0


@dataclass
class RunningStack:
    proc: subprocess.Popen[bytes]
    gateway_url: str
    llm_url: str
    embedding_url: str
    registry_url: str
    model_registry_url: str
    transcription_url: str
    log_path: Path
    env: dict[str, str]  # what the stack runs with: the caller's environment plus its overrides

    @property
    def base_url(self) -> str:
        return f"{self.gateway_url}/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise


def start_stack(tmp: Path, *extra: str, env: dict[str, str] | None = None,
                api_key: str | None = None) -> RunningStack:
    """``env``: variables on top of this process's (e.g. keys on); ``api_key``: what the readiness check
    sends the gateway when keys are on."""
    gw, llm, emb, reg, models, stt = free_ports(6)
    log_path = tmp / "stack.log"
    argv = [sys.executable, "-m", "stack", "up", "--gateway-port", str(gw), "--llm-port", str(llm),
            "--embedding-port", str(emb), "--registry-port", str(reg), "--model-registry-port", str(models),
            "--transcription-port", str(stt),
            "--ready-timeout", str(READY_TIMEOUT_S), *extra]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=full_env)
    running = RunningStack(proc, f"http://127.0.0.1:{gw}", f"http://127.0.0.1:{llm}",
                           f"http://127.0.0.1:{emb}", f"http://127.0.0.1:{reg}", f"http://127.0.0.1:{models}",
                           f"http://127.0.0.1:{stt}", log_path, full_env)
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    wanted = {STARTER_LLM.model_id, STARTER_EMBEDDING.model_id}
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"stack exited with {proc.returncode} before it was ready:\n{running.log()}")
        if "Model Service Platform is up." in running.log():
            models_url = f"{running.base_url}/models"
            listed = {m["id"] for m in httpx.get(models_url, headers=headers, timeout=5).json()["data"]}
            assert wanted <= listed
            return running
        time.sleep(0.5)
    running.stop(signal.SIGKILL)
    pytest.fail(f"stack not ready in {READY_TIMEOUT_S} s:\n{running.log()}")
