"""Service registry factory: ``uvicorn --factory service_registry.app:create_app --port 8070``.

The lifespan owns the one ``httpx.AsyncClient`` used for every probe and the one polling task; both
end in ``finally``. Static upstreams and auth settings are read (and checked) in the factory, so a bad
configuration stops start-up with a clear error instead of serving a half-configured registry.

With ``MODEL_SERVICE_AUTH=true`` every route but ``/health`` needs the service token (or the admin
key), and the poller sends the token to workers, never to externals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import Depends, FastAPI

from common.auth import Authenticator, AuthSettings, Role, require
from common.service import metrics_router, service_app
from service_registry.deps import ServiceRegistryState
from service_registry.health import HealthPolicy
from service_registry.metrics import ServiceRegistryMetrics
from service_registry.poller import Poller
from service_registry.registry import Registry
from service_registry.routes import OPEN_ROUTERS, SERVICE_ROUTERS
from service_registry.settings import RegistrySettings, StaticUpstream

log = logging.getLogger(__name__)


def probe_client(settings: RegistrySettings) -> httpx.AsyncClient:
    """The client for every probe. trust_env=False: an outside-world proxy must not catch worker traffic."""
    timeout = httpx.Timeout(settings.probe_timeout_s)
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    return httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False)


def create_app(settings: RegistrySettings | None = None, auth: AuthSettings | None = None) -> FastAPI:
    """``auth``: the API-key settings (default: ``MODEL_SERVICE_AUTH`` and friends from the environment)."""
    settings = settings or RegistrySettings()
    auth = auth or AuthSettings()
    statics = {s.id: s for s in settings.all_static_upstreams()}
    metrics = ServiceRegistryMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with probe_client(settings) as client:
            state = _build_state(settings, statics, client, metrics, auth.outgoing_headers())
            app.state.service_registry = state
            task = asyncio.create_task(state.poller.run(), name="service-registry-poller")
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                app.state.service_registry = None

    app = service_app("Service Registry", settings=settings, authenticator=Authenticator(auth), lifespan=lifespan,
                      observe_request=metrics.requests.observe)
    for router in OPEN_ROUTERS:
        app.include_router(router)
    service = [Depends(require(Role.SERVICE))]
    for router in SERVICE_ROUTERS:
        app.include_router(router, dependencies=service)
    app.include_router(metrics_router(metrics.registry), dependencies=service, tags=["views"])
    return app


def _build_state(settings: RegistrySettings, statics: dict[str, StaticUpstream], client: httpx.AsyncClient,
                 metrics: ServiceRegistryMetrics, worker_headers: dict[str, str]) -> ServiceRegistryState:
    policy = HealthPolicy(unhealthy_after=settings.unhealthy_after, healthy_after=settings.healthy_after)
    registry = Registry(list(statics.values()), policy, ttl_for=settings.ttl_for,
                        default_priority=settings.default_worker_priority, now=time.time())
    metrics.record_snapshot(registry.snapshot)
    poller = Poller(registry, client, statics, metrics, interval_s=settings.poll_interval_s,
                    timeout_s=settings.probe_timeout_s, worker_headers=worker_headers)
    if statics:
        log.info("static upstreams: %s", ", ".join(f"{s.id} -> {s.base_url}" for s in statics.values()))
    return ServiceRegistryState(settings=settings, registry=registry, poller=poller, metrics=metrics)
