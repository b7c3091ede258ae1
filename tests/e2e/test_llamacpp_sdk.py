"""A llama.cpp worker as a user runs it: real processes, the openai SDK through the gateway.

``model-service worker`` with ``MODEL_PATH`` naming the starter GGUF (``auto`` picks llamacpp from
the file) supervises a real ``llama-server``; ``model-service gateway`` routes to it. Then the store
path: the GGUF imported into a local store as is (``models import x.gguf --as-is``) is fetched,
verified and served; one flipped byte in the stored copy makes a new worker refuse it before any
llama-server starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import openai
import psutil
import pytest

from model_registry.catalog import Catalog, file_key
from model_registry.storage import open_storage
from model_service.engine_paths import find_llama_server
from stack.starters import STARTER_LLM, package_dir
from tests.helpers.model_registry import registry_env, registry_settings
from tests.helpers.ports import free_port
from tests.helpers.processes import process, settled_health

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    find_llama_server() is None, reason="llama-server is not built (make llama-server)")]

MODEL = "smollm2-gguf"
GGUF = package_dir(STARTER_LLM.package) / str(STARTER_LLM.gguf_file)
# A system prompt and "one sentence": with the default system prompt the first greedy token is a near tie.
QUESTION = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
WORKER_ENV = {"WORKER_MAX_MODEL_LEN": "1024", "WORKER_LLAMACPP_THREADS": "2", "WORKER_MAX_CONCURRENCY": "4",
              "HF_HUB_OFFLINE": "1"}


def worker_argv(port: int, *extra: str) -> list[str]:
    return ["worker", "--port", str(port), "--model-name", MODEL, "--log-level", "info", *extra]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    tmp = tmp_path_factory.mktemp("llamacpp-sdk")
    worker_port, gateway_port = free_port(), free_port()
    worker_url = f"http://127.0.0.1:{worker_port}"
    env = {**WORKER_ENV, "MODEL_PATH": str(GGUF), "WORKER_CACHE_DIR": str(tmp / "cache")}
    with process(worker_argv(worker_port), env, tmp / "worker.log") as worker:
        health = settled_health(worker_url, worker, tmp / "worker.log")
        assert health.status_code == 200 and health.json()["engine"] == "llamacpp", health.text
        gateway_argv = ["gateway", "--port", str(gateway_port), "--workers", worker_url, "--log-level", "warning"]
        with process(gateway_argv, {}, tmp / "gateway.log") as gateway:
            settled_health(f"http://127.0.0.1:{gateway_port}", gateway, tmp / "gateway.log")
            with openai.OpenAI(base_url=f"http://127.0.0.1:{gateway_port}/v1", api_key="unused", max_retries=0,
                               timeout=120) as c:
                yield c


def test_chat_with_usage(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=24)
    choice = resp.choices[0]
    assert "Paris" in choice.message.content and choice.finish_reason == "stop"
    assert resp.model == MODEL and resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_stream_matches_non_stream_and_ends_with_usage(client: openai.OpenAI) -> None:
    kwargs = {"model": MODEL, "messages": QUESTION, "temperature": 0, "max_tokens": 24}
    full = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage == full.usage


def test_stop_and_max_tokens(client: openai.OpenAI) -> None:
    stopped = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=24,
                                             stop=["Paris"])
    assert "Paris" not in stopped.choices[0].message.content and stopped.choices[0].finish_reason == "stop"
    short = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3


def test_structured_outputs_and_forced_tool_calls(client: openai.OpenAI) -> None:
    """llama-server constrains by the JSON Schema the worker passes on (its native ``json_schema``)."""
    population = {"type": "integer", "minimum": 0, "maximum": 99999999}
    schema = {"type": "object", "additionalProperties": False, "required": ["city", "population"],
              "properties": {"city": {"type": "string", "maxLength": 16}, "population": population}}
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}}
    resp = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=40,
                                          response_format=fmt)
    assert resp.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(resp.choices[0].message.content), schema)
    tool = {"type": "function", "function": {"name": "lookup_city", "parameters": schema}}
    called = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=80,
                                            tools=[tool], tool_choice="required", parallel_tool_calls=False)
    assert called.choices[0].finish_reason == "tool_calls", called.choices[0].message
    [call] = called.choices[0].message.tool_calls
    assert call.function.name == "lookup_city"
    jsonschema.validate(json.loads(call.function.arguments), schema)


def test_n_choices_with_seed(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model=MODEL, messages=QUESTION, n=2, max_tokens=8, temperature=0.9,
                                          seed=7)
    assert [c.index for c in resp.choices] == [0, 1] and all(c.message.content for c in resp.choices)
    again = client.chat.completions.create(model=MODEL, messages=QUESTION, n=2, max_tokens=8, temperature=0.9,
                                           seed=7)
    assert [c.message.content for c in again.choices] == [c.message.content for c in resp.choices]


def test_logprobs(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=4,
                                          logprobs=True, top_logprobs=2)
    tokens = resp.choices[0].logprobs.content
    assert len(tokens) == 4 and all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in tokens)
    assert "".join(t.token for t in tokens) == resp.choices[0].message.content


def test_unknown_model_and_bad_parameter_in_our_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such/model", messages=QUESTION)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=7)
    assert bad.value.status_code == 400 and bad.value.body["param"] == "temperature", bad.value.body
    assert set(bad.value.body) == {"message", "type", "param", "code"}


def test_gguf_from_the_store_then_a_flipped_byte_is_refused_before_the_engine_starts(tmp_path: Path) -> None:
    """``models import x.gguf --as-is`` stores the file itself, so its sha256 is checked on every fetch."""
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
