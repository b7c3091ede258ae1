"""The worker contract, the same for every chat engine: transformers in-process, llama.cpp's
``llama-server`` and vLLM as supervised children. Real processes on loopback, real models.

One worker per engine for the module (pytest groups the tests by the module-scoped parameter, so
only one engine runs at a time: vLLM alone holds ~5 GB). Each worker has one slot and no queue.
Loading, then ready; the same metric names as any other worker; 429 when the slot is taken; a client
that goes away stops the work in the engine itself; and, for the engines with a child, the child
killed with SIGKILL makes ``/health`` 503 while the gateway sends the requests to another replica,
until the supervisor has restarted it. A corrupted store file is refused before any engine starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from model_registry.catalog import Catalog, file_key
from model_registry.storage import open_storage
from stack.starters import STARTER_LLM, package_dir
from tests.helpers.engines import llama_server, vllm_python
from tests.helpers.model_registry import registry_env, registry_settings
from tests.helpers.polling import eventually_sync
from tests.helpers.ports import free_port
from tests.helpers.processes import process, settled_health
from tests.helpers.sdk_checks import QUESTION

pytestmark = pytest.mark.e2e

MODEL = "smol"
CHAT = "/v1/chat/completions"
LONG = {"messages": [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}],
        "max_tokens": 900, "temperature": 0, "stream": True}
COMMON_ENV = {"WORKER_MAX_MODEL_LEN": "1024", "WORKER_MAX_CONCURRENCY": "1", "WORKER_MAX_QUEUE": "0",
              "HF_HUB_OFFLINE": "1"}


@dataclass(frozen=True)
class EngineCase:
    """How to run one engine, and how to read its own progress: ``steps_metric`` (decode steps or
    tokens so far, from the child's metrics or the worker's) and ``idle`` (no sequence running)."""

    name: str
    env: dict[str, str]
    gguf: bool = False  # serves the starter GGUF, else the starter's Hugging Face folder
    child: str | None = None  # a word of the child's command line
    steps_metric: str = "worker_batch_size_count"
    idle: Callable[[Running], bool] = lambda running: True
    require: Callable[[], Any] | None = None


CASES = {
    "transformers": EngineCase("transformers", {"WORKER_ENGINE": "transformers", "WORKER_DTYPE": "float32"}),
    "llamacpp": EngineCase("llamacpp", {"WORKER_ENGINE": "llamacpp", "WORKER_LLAMACPP_THREADS": "2"}, gguf=True,
                           child="llama-server", steps_metric="llamacpp:n_decode_total",
                           idle=lambda running: not any(slot["is_processing"] for slot in running.child_get("/slots")),
                           require=llama_server),
    "vllm": EngineCase("vllm", {"WORKER_ENGINE": "vllm", "WORKER_DTYPE": "float32", "WORKER_VLLM_ENFORCE_EAGER": "true",
                                "WORKER_VLLM_KV_CACHE_GIB": "1"},
                       child="vllm.entrypoints", steps_metric="vllm:generation_tokens_total",
                       idle=lambda running: running.metrics()["vllm:num_requests_running"] == 0,
                       require=vllm_python),
}


def model_path(case: EngineCase, smollm_path: Path) -> Path:
    return package_dir(STARTER_LLM.package) / str(STARTER_LLM.gguf_file) if case.gguf else smollm_path


@dataclass
class Running:
    case: EngineCase
    url: str
    proc: subprocess.Popen[bytes]
    first_health: httpx.Response
    log: Path

    def child(self) -> psutil.Process:
        """The engine server the worker supervises (its only child running the engine)."""
        for child in psutil.Process(self.proc.pid).children():
            if self.case.child and self.case.child in " ".join(child.cmdline()):
                return child
        raise AssertionError(f"no {self.case.child} child:\n{self.log.read_text()[-2000:]}")

    def engine_url(self) -> str:
        """The engine server itself (at the port on its command line), or the in-process worker."""
        if not self.case.child:
            return self.url
        argv = self.child().cmdline()
        return f"http://127.0.0.1:{argv[argv.index('--port') + 1]}"

    def child_get(self, path: str) -> Any:
        return httpx.get(f"{self.engine_url()}{path}", timeout=10).json()

    def metrics(self) -> dict[str, float]:
        """The engine's own Prometheus samples: its child's, or (in-process) the worker's."""
        text = httpx.get(f"{self.engine_url()}/metrics", timeout=10).text
        return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}

    def health(self) -> httpx.Response:
        return httpx.get(f"{self.url}/health", timeout=10)


def _first_answer(url: str, proc: subprocess.Popen[bytes]) -> httpx.Response:
    """The worker's first ``/health`` answer (it binds its port at once and loads in the background)."""
    def answered() -> httpx.Response | None:
        assert proc.poll() is None, f"exited with {proc.returncode}"
        try:
            return httpx.get(f"{url}/health", timeout=5)
        except httpx.TransportError:
            return None

    return eventually_sync(answered, f"{url} to answer", within_s=60, every_s=0.05)


@pytest.fixture(scope="module", params=list(CASES))
def running(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            smollm_path: Path) -> Iterator[Running]:
    case = CASES[request.param]
    if case.require is not None:
        case.require()
    tmp = tmp_path_factory.mktemp(f"contract-{case.name}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**COMMON_ENV, **case.env, "MODEL_PATH": str(model_path(case, smollm_path)),
           "WORKER_CACHE_DIR": str(tmp / "cache")}
    argv = ["worker", "--port", str(port), "--model-name", MODEL, "--log-level", "info"]
    with process(argv, env, tmp / "worker.log") as proc:
        first = _first_answer(url, proc)
        health = settled_health(url, proc, tmp / "worker.log", limit_s=400)
        assert health.status_code == 200 and health.json()["engine"] == case.name, health.text
        yield Running(case, url, proc, first, tmp / "worker.log")


def test_loading_then_ready_and_answering(running: Running) -> None:
    assert running.first_health.status_code == 503
    assert running.first_health.json()["error"]["code"] == "model_loading"
    health = running.health().json()
    assert health["status"] == "ok" and health["max_model_len"] == 1024
    resp = httpx.post(f"{running.url}{CHAT}", json={"messages": QUESTION, "temperature": 0, "max_tokens": 24},
                      timeout=120)
    assert resp.status_code == 200 and "Paris" in resp.json()["choices"][0]["message"]["content"], resp.text


def _worker_metric_names(url: str) -> set[str]:
    """A non-streamed and a streamed chat, a 404, then the metric families the worker exports."""
    with httpx.Client(base_url=url, timeout=120) as client:
        assert client.post(CHAT, json={"messages": QUESTION, "max_tokens": 4}).status_code == 200
        assert client.post(CHAT, json={"messages": QUESTION, "max_tokens": 4, "stream": True}).status_code == 200
        assert client.post(CHAT, json={"model": "other", "messages": QUESTION}).status_code == 404
        return {family.name for family in text_string_to_metric_families(client.get("/metrics").text)}


def test_metric_names_are_the_same_as_the_fake_workers(running: Running, tmp_path: Path) -> None:
    port = free_port()
    with process(["worker", "--port", str(port), "--model-name", MODEL, "--engine", "fake"], {},
                 tmp_path / "fake.log") as fake:
        settled_health(f"http://127.0.0.1:{port}", fake, tmp_path / "fake.log")
        theirs = _worker_metric_names(f"http://127.0.0.1:{port}")
    ours = _worker_metric_names(running.url)
    assert ours == theirs and "worker_time_to_first_token_seconds" in ours


def test_429_when_the_only_slot_is_taken(running: Running) -> None:
    with httpx.Client(base_url=running.url, timeout=120) as client:
        with client.stream("POST", CHAT, json=LONG) as first:
            assert first.status_code == 200
            lines = first.iter_lines()
            seen = [next(lines) for _ in range(4)]  # admitted and generating (a role chunk, then content)
            busy = client.post(CHAT, json={"messages": QUESTION, "max_tokens": 4})
            assert busy.status_code == 429, (busy.text, seen, list(lines)[-6:])  # the rest: did it end early?
    assert busy.status_code == 429 and "retry-after" in busy.headers
    assert busy.json()["error"]["type"] == "rate_limit_error"


def test_a_client_that_leaves_stops_the_work_in_the_engine(running: Running) -> None:
    case = running.case
    before = running.metrics().get(case.steps_metric, 0.0)
    with httpx.Client(base_url=running.url, timeout=120) as client, client.stream("POST", CHAT, json=LONG) as resp:
        lines = resp.iter_lines()
        chunks = [next(lines) for _ in range(12)]  # a few tokens in, then the client goes
    assert any('"content"' in line for line in chunks)

    eventually_sync(lambda: case.idle(running), f"{case.name} to drop the sequence", within_s=30)
    settled = running.metrics().get(case.steps_metric, 0.0)
    time.sleep(1.0)  # a sequence still decoding would add steps meanwhile
    after = running.metrics().get(case.steps_metric, 0.0)
    # Far fewer steps than the 900 tokens asked for, and none since: the sequence was stopped.
    assert after == settled and after - before < 300, (before, settled, after)


def test_child_killed_worker_503_gateway_fails_over_child_restarted(running: Running, tmp_path: Path) -> None:
    if running.case.child is None:
        pytest.skip(f"{running.case.name} runs in the worker's process: no child to kill")
    fake_port, gateway_port = free_port(), free_port()
    fake_url = f"http://127.0.0.1:{fake_port}"
    with process(["worker", "--port", str(fake_port), "--model-name", MODEL, "--engine", "fake"], {},
                 tmp_path / "fake.log") as fake:
        settled_health(fake_url, fake, tmp_path / "fake.log")
        gateway_argv = ["gateway", "--port", str(gateway_port), "--workers", f"{running.url},{fake_url}",
                        "--log-level", "warning"]
        with process(gateway_argv, {}, tmp_path / "gateway.log") as gateway:
            gateway_url = f"http://127.0.0.1:{gateway_port}"
            settled_health(gateway_url, gateway, tmp_path / "gateway.log")
            child = running.child()
            os.kill(child.pid, signal.SIGKILL)

            def down() -> dict[str, Any] | None:
                resp = running.health()
                return resp.json()["error"] if resp.status_code == 503 else None

            error = eventually_sync(down, "/health to say the engine is down", within_s=10, every_s=0.01)
            assert error["code"] == "engine_unavailable" and "restart" in error["message"], error
            body = {"model": MODEL, "messages": QUESTION, "temperature": 0, "max_tokens": 8}
            answers = [httpx.post(f"{gateway_url}{CHAT}", json=body, timeout=120) for _ in range(4)]
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    settled_health(running.url, running.proc, running.log, limit_s=400)
    eventually_sync(lambda: running.health().status_code == 200, "the child to be back", within_s=400, every_s=0.5)
    assert running.child().pid != child.pid
    resp = httpx.post(f"{running.url}{CHAT}", json={"messages": QUESTION, "temperature": 0, "max_tokens": 24},
                      timeout=120)
    assert resp.status_code == 200 and "Paris" in resp.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("engine", list(CASES))
def test_a_corrupted_store_file_is_refused_before_the_engine_starts(
        engine: str, smollm_path: Path, tmp_path: Path) -> None:
    """One flipped byte in the stored weights: the worker answers 503 naming the file, no child runs.
    (No engine needs to be installed: the refusal comes first.)"""
    case = CASES[engine]
    source = model_path(case, smollm_path)
    settings = registry_settings("local", tmp_path, None)
    env = {**registry_env(settings), **COMMON_ENV, **case.env, "WORKER_CACHE_DIR": str(tmp_path / "cache")}
    extra = ["--as-is"] if case.gguf else []
    imported = subprocess.run([sys.executable, "-m", "stack", "models", "import", str(source), "--id", MODEL,
                               "--type", "llm", *extra], env={**os.environ, **env}, capture_output=True, timeout=300)
    assert imported.returncode == 0, imported.stderr.decode()[-2000:]
    store = open_storage(settings)
    revision = Catalog(store).resolve(MODEL)
    weights = max(Catalog(store).manifest(MODEL, revision).files, key=lambda f: f.size).path
    key = file_key(MODEL, revision, weights)
    data = bytearray(store.get_bytes(key))
    data[len(data) // 2] ^= 0x01
    store.put_bytes(key, bytes(data))
    store.close()
    port = free_port()
    argv = ["worker", "--port", str(port), "--model-name", MODEL, "--model-source", "store"]
    with process(argv, env, tmp_path / "worker.log") as worker:
        health = settled_health(f"http://127.0.0.1:{port}", worker, tmp_path / "worker.log")
        assert health.status_code == 503, health.text
        error = health.json()["error"]
        assert error["code"] == "model_load_failed" and f"Checksum mismatch for file '{weights}'" in error["message"]
        assert not psutil.Process(worker.pid).children(recursive=True)  # no engine server was started
