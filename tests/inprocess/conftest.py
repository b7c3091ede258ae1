"""Fixtures for in-process apps: the worker app inside its lifespan, reached through ASGITransport."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest

from model_service.app import create_app
from model_service.engines.base import Engine
from model_service.settings import WorkerSettings

WorkerClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


def sse_events(text: str) -> list[Any]:
    """Parse an SSE body into JSON payloads (``[DONE]`` kept as the string)."""
    out = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def assert_error(resp: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    if code is not None:
        assert err["code"] == code
    if param is not None:
        assert err["param"] == param
    return err


async def call_and_disconnect(app: Any, body: dict[str, Any], disconnect_after_chunks: int | None,
                              disconnect_after_s: float = 0.0) -> list[dict[str, Any]]:
    """Send one POST to ``app``; disconnect after N body chunks, or after a delay for non-streaming."""
    payload = json.dumps(body).encode()
    gone = asyncio.Event()
    sent: list[dict[str, Any]] = []
    request_sent = False

    async def receive() -> dict[str, Any]:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        chunks = [m for m in sent if m["type"] == "http.response.body" and m.get("body")]
        if disconnect_after_chunks is not None and len(chunks) >= disconnect_after_chunks:
            gone.set()

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "root_path": "", "server": ("worker", 80), "client": ("127.0.0.1", 1234),
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]}
    if disconnect_after_chunks is None:
        asyncio.get_running_loop().call_later(disconnect_after_s, gone.set)
    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    return sent


async def wait_until(predicate: Any, within_s: float = 2.0) -> bool:
    """Poll a condition on state that has no event to await (engine counters, admission)."""
    for _ in range(int(within_s / 0.01)):
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


@asynccontextmanager
async def worker_client_for(settings: WorkerSettings, engine: Engine | None = None,
                            wait_ready: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """Run a worker app's lifespan and yield a client bound to it (``client.app`` is the app)."""
    app = create_app(settings, engine=engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://worker", timeout=60) as client:
            client.app = app  # type: ignore[attr-defined]
            if wait_ready:
                for _ in range(300):
                    if (await client.get("/health")).status_code == 200:
                        break
                    await asyncio.sleep(0.02)
            yield client


@pytest.fixture
def worker_client() -> WorkerClientFactory:
    """``async with worker_client(model_type=..., **settings) as client`` for a fake-engine worker."""

    def factory(wait_ready: bool = True, **overrides: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        values: dict[str, Any] = {"engine": "fake", "model_name": "fake-model", "model_type": "llm"}
        values.update(overrides)
        return worker_client_for(WorkerSettings(_env_file=None, **values), wait_ready=wait_ready)

    return factory


def loaded_engine(**values: Any) -> Iterator[Engine]:
    """Build and load a real engine from worker settings; close it when the fixture ends."""
    from model_service.engines import build_engine

    engine = build_engine(WorkerSettings(_env_file=None, **values))
    engine.load()
    yield engine
    engine.close()


# The shared real-model engines run in float32 on purpose: their tests compare batched with unbatched
# output (equal tokens, cosine > 0.9999), which is exact only in float32. ``auto`` would pick bf16 on a
# CPU with AMX or on a GPU, where a padded row's near-ties can flip; test_batching_llm.py covers bf16
# with a claim that holds there.
@pytest.fixture(scope="session")
def worker_llm_engine(smollm_path):
    """The real SmolLM2 chat model (float32), loaded once per session and shared by the real-model tests."""
    yield from loaded_engine(model_name="smollm2", model_type="llm", model_path=str(smollm_path), dtype="float32")


@pytest.fixture(scope="session")
def worker_embedding_engine(minilm_path):
    """The real all-MiniLM-L6-v2 embedder (float32), loaded once per session."""
    yield from loaded_engine(model_name="minilm", model_type="embedding", model_path=str(minilm_path),
                             dtype="float32")
