"""Apps on real loopback HTTP inside the test's event loop: ``serve`` any app, the gateway, the registry.

Each app runs in a ``uvicorn.Server`` on 127.0.0.1, by default on port 0 (the kernel picks, so no two
tests race for a port); a test that restarts a server at the same address passes a fixed port.
Every server is stopped by its context manager.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp

from common.records import ServiceRecord
from gateway.app import create_app
from gateway.deps import GatewayState
from gateway.settings import GatewaySettings
from service_registry.app import create_app as create_registry
from service_registry.client import RegistryClient
from service_registry.settings import RegistrySettings

T = TypeVar("T")
START_TIMEOUT_S = 15.0


def _server(app: ASGIApp, port: int, lifespan: str = "on") -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan,
                                         timeout_graceful_shutdown=2))


def _url(server: uvicorn.Server) -> str:
    return f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"


@asynccontextmanager
async def serve(app: ASGIApp, port: int = 0) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn on 127.0.0.1:``port`` (0: a free one) until the block ends; yields its URL."""
    server = _server(app, port)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn exited before it started")
                await asyncio.sleep(0.01)
        yield _url(server)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=START_TIMEOUT_S)


@contextmanager
def serve_in_thread(app: ASGIApp) -> Iterator[str]:
    """:func:`serve` for synchronous tests: uvicorn runs in a thread with its own event loop."""
    server = _server(app, 0, lifespan="off")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not server.started:
            raise RuntimeError("uvicorn did not start")
        yield _url(server)
    finally:
        server.should_exit = True
        thread.join(10)


class FirstInOrder(random.Random):
    """An rng whose 'sample' keeps the given order: with equal load, the first configured replica wins."""

    def sample(self, population: Sequence[T], k: int, **_: Any) -> list[T]:  # type: ignore[override]
        return list(population)[:k]


@asynccontextmanager
async def gateway(workers: list[str], ordered: bool = False, **overrides: Any) -> AsyncIterator[
        tuple[str, GatewayState]]:
    """A real gateway on loopback; the probe interval is long so the snapshot stays as first seen."""
    options: dict[str, Any] = {"workers": workers, "probe_interval_s": 60.0, "probe_timeout_s": 2.0,
                               "connect_timeout_s": 2.0, "read_timeout_s": 10.0, "_env_file": None}
    options.update(overrides)
    app = create_app(GatewaySettings(**options))
    async with serve(app) as url:
        state: GatewayState = app.state.gateway
        if ordered:
            state.rng = FirstInOrder()
        yield url, state


def registry_app(**kw: Any) -> FastAPI:
    """A service registry that polls fast and changes status after few probes (tests wait less)."""
    options: dict[str, Any] = {"poll_interval_s": 0.2, "probe_timeout_s": 1.0, "unhealthy_after": 2,
                               "healthy_after": 1, "_env_file": None}
    return create_registry(RegistrySettings(**{**options, **kw}))


def status_is(client: RegistryClient, service_id: str, *statuses: str) -> Callable[[], Awaitable[Any]]:
    """A check for :func:`~tests.helpers.polling.eventually`: the record once its status is one of these."""
    async def check() -> ServiceRecord | None:
        record = (await client.services()).get(service_id)
        return record if record is not None and record.status in statuses else None
    return check
