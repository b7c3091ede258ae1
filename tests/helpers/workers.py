"""Worker apps for tests: in-process behind ``httpx.ASGITransport``, or on loopback HTTP.

The fake engine serves unless a test passes a real one (:func:`loaded_engine` builds and loads it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from common.auth import AuthSettings
from model_service.app import create_app
from model_service.engines.base import Engine
from model_service.settings import WorkerSettings
from tests.helpers.polling import eventually
from tests.helpers.servers import serve

WorkerClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


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
                await _ready(client, "", within_s=60.0)  # a real engine may still be loading
            yield client


async def _ready(client: httpx.AsyncClient, url: str, within_s: float = 10.0) -> None:
    """The engine loads in the background; ``/health`` answers 200 once it is ready (open with auth on)."""

    async def ready() -> bool:
        return (await client.get(f"{url}/health")).status_code == 200

    await eventually(ready, f"the worker at {url or client.base_url} to be ready", within_s)


def loaded_engine(**values: Any) -> Iterator[Engine]:
    """Build and load a real engine from worker settings; close it when the fixture ends."""
    from model_service.engines import build_engine

    engine = build_engine(WorkerSettings(_env_file=None, **values))
    engine.load()
    yield engine
    engine.close()


def worker_app(model: str, model_type: str = "llm", auth: AuthSettings | None = None, **knobs: Any) -> FastAPI:
    """A worker app with the fake engine; ``knobs`` are more :class:`WorkerSettings` fields."""
    settings = WorkerSettings(_env_file=None, engine="fake", model_name=model, model_type=model_type, **knobs)
    return create_app(settings) if auth is None else create_app(settings, auth=auth)


@asynccontextmanager
async def worker(name: str, model_type: str = "llm", auth: AuthSettings | None = None,
                 **knobs: Any) -> AsyncIterator[tuple[str, FastAPI]]:
    """A fake-engine worker on loopback; yields its URL, once ready, and the app (to read engine counters)."""
    app = worker_app(name, model_type, auth, **knobs)
    async with serve(app) as url:
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            await _ready(client, url)
        yield url, app
