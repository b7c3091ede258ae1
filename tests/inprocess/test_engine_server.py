"""The engine-server supervisor: a child on a loopback port, readiness, restart after any death, and a
stop that leaves no process behind.

The first tests use a tiny stand-in server (a Python one-file HTTP server, fast and always
available) for the supervision rules; the ``e2e`` ones run the real ``llama-server`` (built once by
``make llama-server``, found at the cached path) on the starter GGUF and talk OpenAI chat to it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from model_service.engine_paths import find_llama_server
from model_service.engine_server import EngineFailed, EngineServer, EngineState
from model_service.llamacpp_args import llama_server_argv
from stack.starters import STARTER_LLM, package_dir

# A stand-in engine: /health 200 once up (after STUB_DELAY seconds), /pid its pid, /child the pid of
# a grandchild it forks (the supervisor must stop the whole group); STUB_EXIT makes it die at once.
STUB = r"""
import http.server, json, os, subprocess, sys, time
if os.environ.get("STUB_EXIT"):
    sys.exit(int(os.environ["STUB_EXIT"]))
time.sleep(float(os.environ.get("STUB_DELAY", "0")))
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"/health": {"status": "ok"}, "/pid": os.getpid(), "/child": child.pid}
                          .get(self.path, "missing")).encode()
        self.send_response(200 if self.path in ("/health", "/pid", "/child") else 404)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def _stub(**env: str) -> EngineServer:
    return EngineServer("stub", lambda port: [sys.executable, "-c", STUB, str(port)], env=env,
                        start_timeout_s=20, stop_grace_s=3, backoff_s=0.1, max_backoff_s=0.5)


def _gone(pid: int) -> bool:
    """No such process, or only its zombie entry left for init to reap (a grandchild killed with its
    group is re-parented, so it is not ours to reap)."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def _wait_for(predicate, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_ready_then_relay_then_stop_leaves_no_process():
    server = _stub()
    await server.start()
    try:
        assert server.status.state is EngineState.READY
        pid = (await server.client.get("/pid")).json()
        grandchild = (await server.client.get("/child")).json()
        assert server.status.pid == pid
        assert server.base_url == f"http://127.0.0.1:{server.port}"
    finally:
        await server.stop()
    assert server.status.state is EngineState.STOPPED
    assert _gone(pid) and _gone(grandchild)  # the whole process group, reaped
    assert server.client.is_closed


async def test_sigkill_is_noticed_and_the_engine_restarted_on_the_same_port():
    server = _stub()
    await server.start()
    try:
        first = server.status.pid
        grandchild = (await server.client.get("/child")).json()
        os.kill(first, signal.SIGKILL)
        await _wait_for(lambda: server.status.state is not EngineState.READY)
        await _wait_for(lambda: server.status.state is EngineState.READY)
        status = server.status
        assert status.pid != first and status.restarts == 1 and status.last_exit_code == -signal.SIGKILL
        assert (await server.client.get("/pid")).json() == status.pid
        assert _gone(grandchild)  # the dead engine's leftovers were killed before the restart
    finally:
        await server.stop()
    assert _gone(status.pid)


async def test_a_crash_loop_ends_failed_with_its_exit_code():
    server = _stub(STUB_EXIT="3")
    server.max_restarts = 2
    with pytest.raises(EngineFailed):
        await server.start()
    status = server.status
    assert status.state is EngineState.FAILED and status.restarts == 2 and status.last_exit_code == 3
    await server.stop()


async def test_an_engine_that_never_answers_is_stopped_at_the_start_deadline():
    server = _stub(STUB_DELAY="60")
    server.start_timeout_s, server.max_restarts = 0.5, 0
    await server.start(wait=False)
    assert server.status.state is EngineState.STARTING
    async with asyncio.timeout(20):
        with pytest.raises(EngineFailed):
            await server.wait_ready()
    assert server.status.last_exit_code == -signal.SIGTERM
    await server.stop()


async def test_a_missing_binary_fails_instead_of_hanging(tmp_path):
    server = EngineServer("missing", lambda port: [str(tmp_path / "no-such-engine"), str(port)])
    async with asyncio.timeout(10):
        with pytest.raises(EngineFailed, match="FileNotFoundError"):
            await server.start()
    await server.stop()


# --- the real llama-server -------------------------------------------------------------------------

LLAMA_SERVER = find_llama_server()
needs_llama_server = pytest.mark.skipif(
    LLAMA_SERVER is None, reason="llama-server is not built (make llama-server / scripts/build-llama-server.sh)")
# With the template's default system prompt the first greedy token is a near tie ("The" -1.86 vs "L"
# -1.96 in fp32) that llama.cpp's 8-bit activations flip; this prompt answers "Paris" in both.
QUESTION = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


@pytest.fixture
async def llama():
    """The starter GGUF served by the real llama-server, 4 parallel slots, under the supervisor."""
    assert LLAMA_SERVER is not None
    gguf = package_dir(STARTER_LLM.package) / str(STARTER_LLM.gguf_file)
    server = EngineServer("llama.cpp", lambda port: llama_server_argv(
        LLAMA_SERVER, gguf, served_name="smollm2", port=port, context_length=1024, parallel=4, threads=2),
        start_timeout_s=120, backoff_s=0.2)
    await server.start()
    try:
        yield server
    finally:
        pid = server.status.pid
        await server.stop()
    assert pid is not None and _gone(pid)


def _chat(**extra) -> dict:
    return {"model": "smollm2", "messages": QUESTION, "temperature": 0, "max_tokens": 24, **extra}


async def _stream_text(server: EngineServer) -> str:
    text = []
    async with server.client.stream("POST", "/v1/chat/completions", json=_chat(stream=True)) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                choices = json.loads(line[6:]).get("choices") or [{}]
                text.append(choices[0].get("delta", {}).get("content") or "")
    return "".join(text)


@pytest.mark.e2e
@needs_llama_server
async def test_llama_server_answers_streamed_and_not_streamed(llama):
    response = await llama.client.post("/v1/chat/completions", json=_chat())
    assert response.status_code == 200, response.text
    body = response.json()
    assert "Paris" in body["choices"][0]["message"]["content"]
    assert body["usage"]["completion_tokens"] > 0
    assert "Paris" in await _stream_text(llama)


@pytest.mark.e2e
@needs_llama_server
async def test_llama_server_serves_four_streams_at_once(llama):
    texts = await asyncio.wait_for(asyncio.gather(*(_stream_text(llama) for _ in range(4))), 120)
    assert all("Paris" in text for text in texts), texts


@pytest.mark.e2e
@needs_llama_server
async def test_llama_server_killed_is_restarted_and_answers_again(llama):
    pid = llama.status.pid
    os.kill(pid, signal.SIGKILL)
    await _wait_for(lambda: llama.status.state is not EngineState.READY, 10)
    assert llama.status.state in (EngineState.RESTARTING, EngineState.FAILED)
    await _wait_for(lambda: llama.status.state is EngineState.READY, 120)
    assert _gone(pid) and llama.status.pid != pid
    response = await llama.client.post("/v1/chat/completions", json=_chat())
    assert "Paris" in response.json()["choices"][0]["message"]["content"]


def test_the_starter_gguf_is_where_the_engine_tests_look():
    assert (package_dir(STARTER_LLM.package) / str(STARTER_LLM.gguf_file)).is_file()
    assert LLAMA_SERVER is None or Path(LLAMA_SERVER).is_file()
