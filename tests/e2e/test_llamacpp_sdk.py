"""A llama.cpp worker as a user runs it: real processes, the openai SDK through the gateway.

``model-service worker`` with ``MODEL_PATH`` naming the starter GGUF (``auto`` picks llamacpp from
the file) supervises a real ``llama-server``; ``model-service gateway`` routes to it. Then the store
path: the GGUF imported into a local store as is (``models import x.gguf --as-is``) is fetched,
verified and served; one flipped byte in the stored copy makes a new worker refuse it before any
llama-server starts. And the registry's own conversion (``models export-gguf``): the Hugging Face
SmolLM2 converted to Q8_0 in the store is served by ``--engine auto`` on llamacpp.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from model_registry.catalog import Catalog, file_key
from model_registry.storage import open_storage
from stack.starters import STARTER_LLM, package_dir
from tests.helpers import sdk_checks
from tests.helpers.engines import llama_server
from tests.helpers.gguf import MODEL_ID as GGUF_MODEL
from tests.helpers.gguf import GgufExports
from tests.helpers.model_registry import registry_env, registry_settings
from tests.helpers.ports import free_port
from tests.helpers.processes import process, settled_health
from tests.helpers.sdk_checks import QUESTION

pytestmark = pytest.mark.e2e

MODEL = "smollm2-gguf"
GGUF = package_dir(STARTER_LLM.package) / str(STARTER_LLM.gguf_file)
WORKER_ENV = {"WORKER_MAX_MODEL_LEN": "1024", "WORKER_LLAMACPP_THREADS": "2", "WORKER_MAX_CONCURRENCY": "4",
              "HF_HUB_OFFLINE": "1"}


def worker_argv(port: int, *extra: str) -> list[str]:
    return ["worker", "--port", str(port), "--model-name", MODEL, "--log-level", "info", *extra]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    llama_server()
    tmp = tmp_path_factory.mktemp("llamacpp-sdk")
    worker_port, gateway_port = free_port(), free_port()
    worker_url = f"http://127.0.0.1:{worker_port}"
    env = {**WORKER_ENV, "MODEL_PATH": str(GGUF), "WORKER_CACHE_DIR": str(tmp / "cache")}
    with process(worker_argv(worker_port), env, tmp / "worker.log") as worker:
        health = settled_health(worker_url, worker, tmp / "worker.log")
        assert health.status_code == 200 and health.json()["engine"] == "llamacpp", health.text
        assert health.json()["dtype"] == "Q4_1"  # the GGUF's own file type
        gateway_argv = ["gateway", "--port", str(gateway_port), "--workers", worker_url, "--log-level", "warning"]
        with process(gateway_argv, {}, tmp / "gateway.log") as gateway:
            settled_health(f"http://127.0.0.1:{gateway_port}", gateway, tmp / "gateway.log")
            with openai.OpenAI(base_url=f"http://127.0.0.1:{gateway_port}/v1", api_key="unused", max_retries=0,
                               timeout=120) as c:
                yield c


@pytest.mark.parametrize("check", sdk_checks.CHECKS, ids=lambda check: check.__name__)
def test_sdk(client: openai.OpenAI, check: Callable[[openai.OpenAI, str], None]) -> None:
    check(client, MODEL)


def test_gguf_from_the_store_then_a_flipped_byte_is_refused_before_the_engine_starts(tmp_path: Path) -> None:
    """``models import x.gguf --as-is`` stores the file itself, so its sha256 is checked on every fetch."""
    llama_server()
    settings = registry_settings("local", tmp_path, None)
    env = {**registry_env(settings), **WORKER_ENV, "WORKER_CACHE_DIR": str(tmp_path / "cache")}
    imported = subprocess.run([sys.executable, "-m", "stack", "models", "import", str(GGUF), "--id", MODEL,
                               "--type", "llm", "--as-is"], env={**os.environ, **env}, capture_output=True,
                              timeout=300)
    assert imported.returncode == 0, imported.stderr.decode()[-2000:]
    store = open_storage(settings)
    manifest = Catalog(store).manifest(MODEL, Catalog(store).resolve(MODEL))
    assert [f.path for f in manifest.files] == [GGUF.name] and manifest.files[0].size == GGUF.stat().st_size
    assert manifest.source["stored"] == "as is" and manifest.source["quantization"] == "Q4_1"

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process(worker_argv(port, "--model-source", "store"), env, tmp_path / "worker.log") as worker:
        health = settled_health(url, worker, tmp_path / "worker.log")
        assert health.status_code == 200 and health.json()["engine"] == "llamacpp", health.text
        resp = httpx.post(f"{url}/v1/chat/completions", json={"messages": QUESTION, "temperature": 0,
                                                             "max_tokens": 24}, timeout=120)
        assert "Paris" in resp.json()["choices"][0]["message"]["content"]

    key = file_key(MODEL, Catalog(store).resolve(MODEL), GGUF.name)
    data = bytearray(store.get_bytes(key))
    data[len(data) // 2] ^= 0x01
    store.put_bytes(key, bytes(data))
    store.close()
    env["WORKER_CACHE_DIR"] = str(tmp_path / "fresh-cache")
    with process(worker_argv(port, "--model-source", "store"), env, tmp_path / "worker-bad.log") as worker:
        health = settled_health(url, worker, tmp_path / "worker-bad.log")
        assert health.status_code == 503, health.text
        error = health.json()["error"]
        assert error["code"] == "model_load_failed" and f"Checksum mismatch for file '{GGUF.name}'" in error["message"]
        assert not psutil.Process(worker.pid).children(recursive=True)  # no llama-server was started


def test_sampling_extensions_reach_llama_server(client: openai.OpenAI,
                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    """top_k and logit_bias (vLLM's extensions, and OpenAI's) change what llama-server samples."""
    kwargs = {"model": MODEL, "messages": QUESTION, "max_tokens": 12}
    greedy = client.chat.completions.create(**kwargs, temperature=0).choices[0].message.content
    assert "Paris" in greedy
    # top_k=1 leaves one candidate: any temperature and seed give the greedy answer.
    for seed in (1, 2):
        sampled = client.chat.completions.create(**kwargs, temperature=1.5, seed=seed, extra_body={
            "top_k": 1, "min_p": 0.0, "repetition_penalty": 1.0})
        assert sampled.choices[0].message.content == greedy
    # A -100 bias on every token of " Paris" and "Paris" keeps the city out of the greedy answer.
    from transformers import AutoTokenizer

    cached = next(Path(p) for p in tmp_path_factory.getbasetemp().glob("llamacpp-sdk*/cache/gguf-tokenizers/*"))
    tokenizer = AutoTokenizer.from_pretrained(cached)
    banned = {t for word in ("Paris", " Paris") for t in tokenizer(word, add_special_tokens=False)["input_ids"]}
    biased = client.chat.completions.create(**kwargs, temperature=0, logit_bias={str(t): -100 for t in banned})
    assert "Paris" not in biased.choices[0].message.content


def test_an_exported_gguf_revision_is_served_on_llamacpp_by_auto(gguf_exports: GgufExports, tmp_path: Path) -> None:
    llama_server()
    revision = gguf_exports.revisions["q8_0"]
    env = {**registry_env(gguf_exports.settings), **WORKER_ENV, "WORKER_CACHE_DIR": str(tmp_path / "cache")}
    port = free_port()
    argv = ["worker", "--port", str(port), "--model-name", GGUF_MODEL, "--model-type", "llm",
            "--model-source", "store", "--model-revision", revision, "--engine", "auto", "--log-level", "info"]
    with process(argv, env, tmp_path / "worker.log") as worker:
        health = settled_health(f"http://127.0.0.1:{port}", worker, tmp_path / "worker.log")
        assert health.status_code == 200 and health.json()["engine"] == "llamacpp", health.text
        assert health.json()["dtype"] == "Q8_0"
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0,
                           timeout=120) as client:
            reply = client.chat.completions.create(model=GGUF_MODEL, messages=QUESTION,
                                                   temperature=0, max_tokens=24)
    assert "Paris" in reply.choices[0].message.content
