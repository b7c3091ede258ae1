"""A vLLM worker as a user runs it: real processes, the openai SDK through the gateway.

``model-service worker --engine vllm`` on the starter chat model's Hugging Face folder supervises a
real vLLM server from its own venv (``make vllm-venv``); ``model-service gateway`` routes to it. One
worker for the module: vLLM takes ~40 s to start on a CPU (``--enforce-eager``) and holds ~5 GB.
The worker asks vLLM for no usage chunk, so the streamed usage below is always the worker's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.helpers import sdk_checks
from tests.helpers.engines import vllm_python
from tests.helpers.ports import free_port
from tests.helpers.processes import process, settled_health
from tests.helpers.sdk_checks import QUESTION

pytestmark = pytest.mark.e2e

MODEL = "smollm2-vllm"
# float32 (what auto picks on CPUs without fast bf16), eager (no compile at start), a small context.
VLLM_ENV = {"WORKER_ENGINE": "vllm", "WORKER_DTYPE": "float32", "WORKER_MAX_MODEL_LEN": "1024",
            "WORKER_MAX_CONCURRENCY": "4", "WORKER_VLLM_ENFORCE_EAGER": "true", "WORKER_VLLM_KV_CACHE_GIB": "1",
            "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, smollm_path: Path) -> Iterator[tuple[openai.OpenAI, str]]:
    """The SDK client at the gateway, and the worker's own URL."""
    vllm_python()
    tmp = tmp_path_factory.mktemp("vllm-sdk")
    worker_port, gateway_port = free_port(), free_port()
    worker_url = f"http://127.0.0.1:{worker_port}"
    env = {**VLLM_ENV, "MODEL_PATH": str(smollm_path), "WORKER_CACHE_DIR": str(tmp / "cache")}
    argv = ["worker", "--port", str(worker_port), "--model-name", MODEL, "--log-level", "info"]
    with process(argv, env, tmp / "worker.log") as worker:
        health = settled_health(worker_url, worker, tmp / "worker.log", limit_s=300)
        assert health.status_code == 200 and health.json()["engine"] == "vllm", health.text
        gateway_argv = ["gateway", "--port", str(gateway_port), "--workers", worker_url, "--log-level", "warning"]
        with process(gateway_argv, {}, tmp / "gateway.log") as gateway:
            settled_health(f"http://127.0.0.1:{gateway_port}", gateway, tmp / "gateway.log")
            with openai.OpenAI(base_url=f"http://127.0.0.1:{gateway_port}/v1", api_key="unused", max_retries=0,
                               timeout=120) as c:
                yield c, worker_url


@pytest.fixture
def client(served: tuple[openai.OpenAI, str]) -> openai.OpenAI:
    return served[0]


@pytest.mark.parametrize("check", sdk_checks.CHECKS, ids=lambda check: check.__name__)
def test_sdk(client: openai.OpenAI, check: Callable[[openai.OpenAI, str], None]) -> None:
    check(client, MODEL)


def test_the_model_card_and_health_name_the_engine(served: tuple[openai.OpenAI, str]) -> None:
    worker_url = served[1]
    card = httpx.get(f"{worker_url}/v1/models/{MODEL}", timeout=10).json()
    assert card["engine"] == "vllm" and card["max_model_len"] == 1024, card
    assert httpx.get(f"{worker_url}/health", timeout=10).json()["dtype"] == "float32"


def test_streaming_without_include_usage_has_no_usage(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=3,
                                                 stream=True))
    assert all(c.usage is None for c in chunks) and chunks[-1].choices[0].finish_reason == "length"


def test_completions_endpoint(client: openai.OpenAI) -> None:
    resp = client.completions.create(model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=4)
    assert "Paris" in resp.choices[0].text and resp.usage.completion_tokens <= 4
