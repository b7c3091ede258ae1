"""Gateway application factory: ``uvicorn --factory gateway.app:create_app --port 8080``.

The lifespan owns the one upstream ``httpx.AsyncClient`` and the probing task; both are closed in
``finally``. The first probe round finishes before the app serves, so routing works at once.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from common.body_limit import BodyLimitMiddleware
from common.errors import install_error_handlers
from gateway.deps import GatewayState
from gateway.metrics import GatewayMetrics
from gateway.routes import openai, ops
from gateway.settings import GatewaySettings
from gateway.upstreams import UpstreamProber

log = logging.getLogger(__name__)


def upstream_client(settings: GatewaySettings) -> httpx.AsyncClient:
    """The client for every worker call, with explicit timeouts and a bounded pool."""
    timeout = httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s)
    limits = httpx.Limits(max_connections=settings.max_connections,
                          max_keepalive_connections=settings.max_keepalive_connections)
    # trust_env=False: an HTTP(S)_PROXY meant for the outside world must not catch worker traffic.
    return httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    metrics = GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with upstream_client(settings) as client:
            prober = UpstreamProber(client, settings.workers, interval=settings.probe_interval_s,
                                    timeout=settings.probe_timeout_s)
            if not settings.workers:
                log.warning("GATEWAY_WORKERS is empty: every model request will be answered 503")
            await prober.start()
            app.state.gateway = GatewayState(settings=settings, client=client, upstreams=prober,
                                             metrics=metrics)
            try:
                yield
            finally:
                await prober.stop()
                app.state.gateway = None

    app = FastAPI(title="Model Service Gateway", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.include_router(openai.router)
    app.include_router(ops.router)
    return app
