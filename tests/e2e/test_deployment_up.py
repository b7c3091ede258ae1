"""``model-service up --deployment FILE`` with real processes and the real starter models: every replica
is its own worker the gateway balances, and a port already taken stops ``up`` before anything starts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from stack.starters import STARTER_EMBEDDING, STARTER_LLM
from tests.helpers.ports import free_port_pair, free_ports

pytestmark = pytest.mark.e2e
READY_TIMEOUT_S = 300.0


def _write(tmp: Path, gateway: int, registry: int, models: int, chat: int, embedding: int) -> Path:
    file = tmp / "deployment.yaml"
    file.write_text(textwrap.dedent(f"""\
        ports: {{gateway: {gateway}, service_registry: {registry}, model_registry: {models}}}
        models:
          - id: {STARTER_LLM.model_id}
            type: llm
            source: {{starter: llm}}
            replicas: 2
            port: {chat}
            limits: {{max_batch_size: 4, default_max_tokens: 16}}
          - id: {STARTER_EMBEDDING.model_id}
            type: embedding
            source: {{starter: embedding}}
            port: {embedding}
        """))
    return file


def _up(file: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "stack", "up", "--deployment", str(file),
                                 "--ready-timeout", str(READY_TIMEOUT_S)], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _chat_requests(metrics_url: str) -> float:
    total = 0.0
    for line in httpx.get(metrics_url, timeout=5).text.splitlines():
        if line.startswith("worker_requests_total{") and 'endpoint="/v1/chat/completions"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_gateway_balances_both_chat_replicas(tmp_path, smollm_path, minilm_path):
    gateway, registry, models, embedding = free_ports(4)
    chat = free_port_pair()
    log = tmp_path / "up.log"
    proc = _up(_write(tmp_path, gateway, registry, models, chat, embedding), log)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "Model Service Platform is up." not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.5)
        services = httpx.get(f"http://127.0.0.1:{registry}/services", timeout=5).json()["data"]
        chat_workers = sorted((s["id"], s["url"]) for s in services if s["type"] == "llm")
        assert chat_workers == [(f"{STARTER_LLM.model_id}-r0", f"http://127.0.0.1:{chat}"),
                                (f"{STARTER_LLM.model_id}-r1", f"http://127.0.0.1:{chat + 1}")]

        client = OpenAI(base_url=f"http://127.0.0.1:{gateway}/v1", api_key="unused", max_retries=0)
        before = [_chat_requests(f"{url}/metrics") for _, url in chat_workers]

        def ask(i: int) -> str:
            answer = client.chat.completions.create(
                model=STARTER_LLM.model_id, max_tokens=4, messages=[{"role": "user", "content": f"Count to {i}"}])
            return answer.choices[0].message.content or ""

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(ask, range(16)))
        assert len(answers) == 16
        after = [_chat_requests(f"{url}/metrics") for _, url in chat_workers]
        moved = [a - b for a, b in zip(after, before, strict=True)]
        assert sum(moved) == 16 and all(m > 0 for m in moved), moved
        vectors = client.embeddings.create(model=STARTER_EMBEDDING.model_id, input=["hello", "world"])
        assert [len(v.embedding) for v in vectors.data] == [384, 384]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text(errors="replace")


def test_a_taken_port_stops_up_before_anything_starts(tmp_path):
    gateway, registry, models, embedding = free_ports(4)
    chat = free_port_pair()
    log = tmp_path / "up.log"
    with socket.socket() as holder:  # another program already listens where the embedding worker wants to
        holder.bind(("127.0.0.1", embedding))
        holder.listen()
        proc = _up(_write(tmp_path, gateway, registry, models, chat, embedding), log)
        assert proc.wait(timeout=60) == 1
    out = log.read_text(errors="replace")
    assert f"port {embedding} on 127.0.0.1 (wanted by {STARTER_EMBEDDING.model_id} replica 0) is not free" in out
    assert "Putting the models" not in out  # stopped before the store, let alone a child
    for port in (gateway, registry, models, chat, chat + 1):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, port
