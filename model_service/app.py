"""The worker app factory: ``uvicorn --factory model_service.app:create_app``.

The lifespan owns the engine: it starts loading in the background (so ``/health`` answers 503 at
once instead of the port staying closed) and unloads it on shutdown. With ``WORKER_REGISTRY_URL``
set, the app's life is also its membership in the service registry (``registration.py``).

With ``MODEL_SERVICE_AUTH=true`` every route but ``/health`` needs the service token (the gateway
sends it; users never call a worker directly), and the registration carries it too.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from common.auth import Authenticator, AuthSettings, Role, require
from common.service import metrics_router, service_app
from model_service.engines.base import Engine
from model_service.registration import registered
from model_service.routes import OPEN_ROUTERS, SERVICE_ROUTERS
from model_service.settings import WorkerSettings
from model_service.worker import Worker

log = logging.getLogger(__name__)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    worker: Worker = app.state.worker
    await worker.start()
    try:
        # Deregisters before the engine stops; never blocks start-up when the registry is down.
        authenticator: Authenticator = app.state.authenticator
        async with registered(worker.settings, authenticator.settings.outgoing_headers()) as membership:
            worker.membership = membership
            yield
    finally:
        await worker.stop()


def create_app(settings: WorkerSettings | None = None, engine: Engine | None = None,
               auth: AuthSettings | None = None) -> FastAPI:
    """``engine``: an already-loaded engine to serve instead of loading one (the caller closes it).
    ``auth``: the API-key settings (default: ``MODEL_SERVICE_AUTH`` and friends from the environment)."""
    settings = settings or WorkerSettings()
    auth = auth or AuthSettings()
    worker = Worker(settings, engine)
    app = service_app(f"model worker: {settings.model_name}", settings=settings, authenticator=Authenticator(auth),
                      lifespan=_lifespan, observe_request=worker.metrics.requests.observe)
    app.state.worker = worker
    for router in OPEN_ROUTERS:
        app.include_router(router)
    for router in (*SERVICE_ROUTERS, metrics_router(worker.metrics.registry)):
        app.include_router(router, dependencies=[Depends(require(Role.SERVICE))])
    return app
