"""The worker contract on the llamacpp engine: a real ``llama-server`` (built once by ``make
llama-server``) serving the starter GGUF, supervised by a real worker app on loopback HTTP.

Loading, then ready; 429 when the one slot is taken; the same metric names as any other worker; a
client that goes away frees llama-server's slot; the child killed with SIGKILL makes ``/health`` 503
until the supervisor has restarted it, and then it answers again, while the gateway sends the
requests to another replica meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from model_service.app import create_app
from model_service.engine_paths import find_llama_server
from model_service.engines.llamacpp import LlamaCppEngine
from model_service.settings import WorkerSettings
from stack.starters import STARTER_LLM, package_dir
from tests.helpers.polling import eventually
from tests.helpers.servers import gateway, serve
from tests.helpers.workers import worker

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    find_llama_server() is None, reason="llama-server is not built (make llama-server)")]

GGUF = package_dir(STARTER_LLM.package) / str(STARTER_LLM.gguf_file)
CHAT = "/v1/chat/completions"
# A system prompt and "one sentence": with the default system prompt the first greedy token is a near tie.
QUESTION = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
LONG = {"messages": [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}],
        "max_tokens": 900, "temperature": 0, "stream": True}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One worker cache for the module: the tokenizer is converted from the GGUF once, then reused."""
    return tmp_path_factory.mktemp("cache")


def settings(cache: Path, **knobs: Any) -> WorkerSettings:
    """A llamacpp worker on the starter GGUF, chosen by ``auto`` from the file's name."""
    values = {"model_name": "smol", "model_path": str(GGUF), "cache_dir": cache,
              "max_model_len": 1024, "llamacpp_threads": 2, "max_concurrency": 2, **knobs}
    return WorkerSettings(_env_file=None, **values)


@asynccontextmanager
async def llamacpp_worker(cache: Path, **knobs: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The worker app on loopback with a client at its URL, not waited on: tests see the loading."""
    app = create_app(settings(cache, **knobs))
    async with serve(app) as url, httpx.AsyncClient(base_url=url, trust_env=False, timeout=120) as client:
        yield client, app.state.worker


async def ready(client: httpx.AsyncClient) -> None:
    async def ok() -> bool:
        return (await client.get("/health")).status_code == 200

    await eventually(ok, "the llamacpp worker to be ready", within_s=180)


def engine_of(state: Any) -> LlamaCppEngine:
    assert isinstance(state.engine, LlamaCppEngine)
    return state.engine


async def child_metric(engine: LlamaCppEngine, name: str) -> float:
    """One of llama-server's own Prometheus counters, read from the child itself."""
    text = (await engine.server.client.get("/metrics")).text
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(f"llamacpp:{name} "))


async def test_loading_then_ready_and_answering(cache: Path) -> None:
    async with llamacpp_worker(cache) as (client, state):
        first = await client.get("/health")
        assert first.status_code == 503 and first.json()["error"]["code"] == "model_loading"
        await ready(client)
        health = (await client.get("/health")).json()
        assert health["engine"] == "llamacpp" and health["max_model_len"] == 1024
        resp = await client.post(CHAT, json={"messages": QUESTION, "temperature": 0, "max_tokens": 24})
        assert resp.status_code == 200, resp.text
        assert "Paris" in resp.json()["choices"][0]["message"]["content"]
        pid = engine_of(state).server.status.pid
    assert pid is not None and not _alive(pid)  # stopping the worker stopped its engine server
    # The tokenizer converted from the GGUF was cached for the next start.
    assert list((cache / "gguf-tokenizers").glob("*/tokenizer.json"))


async def test_429_when_the_only_slot_is_taken(cache: Path) -> None:
    async with llamacpp_worker(cache, max_concurrency=1, max_queue=0) as (client, _):
        await ready(client)
        async with client.stream("POST", CHAT, json=LONG) as first:
            assert first.status_code == 200
            await anext(first.aiter_lines())  # admitted and streaming
            busy = await client.post(CHAT, json={"messages": QUESTION, "max_tokens": 4})
        assert busy.status_code == 429 and "retry-after" in busy.headers
        assert busy.json()["error"]["type"] == "rate_limit_error"


async def test_a_client_that_leaves_frees_the_slot_in_llama_server(cache: Path) -> None:
    async with llamacpp_worker(cache, max_concurrency=1, llamacpp_parallel=1) as (client, state):
        await ready(client)
        engine = engine_of(state)
        async with client.stream("POST", CHAT, json=LONG) as resp:
            lines = resp.aiter_lines()
            chunks = [await anext(lines) for _ in range(12)]  # a few tokens in, then the client goes
        assert any('"content"' in line for line in chunks)

        async def slot_idle() -> bool:
            slots = (await engine.server.client.get("/slots")).json()
            return not any(slot["is_processing"] for slot in slots)

        await eventually(slot_idle, "llama-server's slot to be freed", within_s=30)
        await eventually(lambda: state.admission.running == 0, "the worker's slot to be freed")
        # Far fewer decode steps than the 900 tokens asked for: the sequence was stopped, not finished.
        assert await child_metric(engine, "n_decode_total") < 300
        resp = await client.post(CHAT, json={"messages": QUESTION, "temperature": 0, "max_tokens": 24})
        assert "Paris" in resp.json()["choices"][0]["message"]["content"]


async def test_child_killed_is_503_then_restarted_and_answering(cache: Path) -> None:
    async with llamacpp_worker(cache) as (client, state):
        await ready(client)
        server = engine_of(state).server
        pid = server.status.pid
        os.kill(pid, signal.SIGKILL)

        async def unavailable() -> dict[str, Any] | None:
            resp = await client.get("/health")
            return resp.json()["error"] if resp.status_code == 503 else None

        error = await eventually(unavailable, "/health to say the engine is down", within_s=10, every_s=0.01)
        assert error["code"] == "engine_unavailable" and "llama-server" in error["message"], error
        await ready(client)
        assert server.status.pid != pid and server.status.restarts == 1
        resp = await client.post(CHAT, json={"messages": QUESTION, "temperature": 0, "max_tokens": 24})
        assert resp.status_code == 200 and "Paris" in resp.json()["choices"][0]["message"]["content"]


async def test_the_gateway_fails_over_while_the_child_restarts(cache: Path) -> None:
    """A second replica of the same model (the fake engine: its answers are told apart) takes the
    requests the restarting one refuses with 503; none reaches the client as an error."""
    async with llamacpp_worker(cache) as (client, state), worker("smol") as (fake_url, _):
        await ready(client)
        async with gateway([str(client.base_url), fake_url], ordered=True, retries=2) as (url, _), \
                httpx.AsyncClient(base_url=url, trust_env=False, timeout=120) as through:
            body = {"model": "smol", "messages": QUESTION, "temperature": 0, "max_tokens": 24}
            first = await through.post(CHAT, json=body)
            assert "Paris" in first.json()["choices"][0]["message"]["content"]  # the llamacpp one, first in order
            os.kill(engine_of(state).server.status.pid, signal.SIGKILL)
            await eventually(lambda: state.engine.unavailable(), "the worker to see its child die", within_s=10)
            answers = [await through.post(CHAT, json=body) for _ in range(3)]
        assert [a.status_code for a in answers] == [200] * 3, [a.text for a in answers]
        # At least the first went to the fake replica (the llamacpp one may be back by the last).
        assert "Paris" not in answers[0].json()["choices"][0]["message"]["content"]
        await ready(client)


async def _traffic(client: httpx.AsyncClient) -> set[str]:
    """A non-streamed and a streamed chat, a 404, then the metric families /metrics exports."""
    assert (await client.post(CHAT, json={"messages": QUESTION, "max_tokens": 4})).status_code == 200
    streamed = await client.post(CHAT, json={"messages": QUESTION, "max_tokens": 4, "stream": True})
    assert streamed.status_code == 200
    assert (await client.post(CHAT, json={"model": "other", "messages": QUESTION})).status_code == 404
    return {family.name for family in text_string_to_metric_families((await client.get("/metrics")).text)}


async def test_metric_names_are_the_same_as_any_other_worker(cache: Path) -> None:
    async with llamacpp_worker(cache) as (client, _):
        await ready(client)
        ours = await _traffic(client)
    async with worker("smol") as (url, _), httpx.AsyncClient(base_url=url, trust_env=False, timeout=30) as fake:
        theirs = await _traffic(fake)
    assert ours == theirs and "worker_time_to_first_token_seconds" in ours


async def test_a_missing_binary_fails_the_load_saying_how_to_build_it(
        cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_SERVICE_HOME", str(tmp_path / "empty-home"))
    async with llamacpp_worker(cache) as (client, _):
        async def failed() -> dict[str, Any] | None:
            error = (await client.get("/health")).json().get("error", {})
            return error if error.get("code") == "model_load_failed" else None

        error = await eventually(failed, "the load to fail", within_s=30)
        assert "make llama-server" in error["message"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_threads_default_to_the_core_count(cache: Path) -> None:
    engine = LlamaCppEngine(settings(cache, llamacpp_threads=None, llamacpp_extra_args="--flash-attn off"))
    await asyncio.to_thread(engine.load)
    argv = engine.argv(1234)
    assert argv[argv.index("--threads") + 1] == str(os.cpu_count())
    assert argv[-2:] == ["--flash-attn", "off"] and argv[argv.index("--parallel") + 1] == "2"
