"""What is particular to the llamacpp engine, on a real worker app: a missing ``llama-server``
fails the load saying how to build it, and the command line's defaults. The worker contract (loading,
429, metrics, cancellation, the child killed and restarted, failover) is checked for every engine in
``test_engine_contract.py``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from model_service.app import create_app
from model_service.engines.llamacpp import LlamaCppEngine
from model_service.settings import WorkerSettings
from stack.starters import STARTER_LLM, package_dir
from tests.helpers.engines import llama_server
from tests.helpers.polling import eventually
from tests.helpers.servers import serve

pytestmark = pytest.mark.e2e

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


async def test_a_missing_binary_fails_the_load_saying_how_to_build_it(
        cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_SERVICE_HOME", str(tmp_path / "empty-home"))
    async with llamacpp_worker(cache) as (client, _):
        async def failed() -> dict[str, Any] | None:
            error = (await client.get("/health")).json().get("error", {})
            return error if error.get("code") == "model_load_failed" else None

        error = await eventually(failed, "the load to fail", within_s=30)
        assert "make llama-server" in error["message"]


async def test_threads_default_to_the_core_count(cache: Path) -> None:
    llama_server()
    engine = LlamaCppEngine(settings(cache, llamacpp_threads=None, llamacpp_extra_args="--flash-attn off"))
    await asyncio.to_thread(engine.load)
    argv = engine.argv(1234)
    assert argv[argv.index("--threads") + 1] == str(os.cpu_count())
    assert argv[-2:] == ["--flash-attn", "off"] and argv[argv.index("--parallel") + 1] == "2"
