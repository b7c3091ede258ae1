"""Gateway application factory: ``uvicorn --factory gateway.app:create_app --port 8080``.

The lifespan owns the one upstream ``httpx.AsyncClient``, the registry client (when
``GATEWAY_REGISTRY_URL`` is set), the refresh task and the usage log's writer thread; all are closed
in ``finally``. The first refresh round finishes before the app serves, so routing works at once.
With ``GATEWAY_REDIS_URL`` set it also owns the shared state store's connection, the key sync loop
and the usage rollup's flush loop (:mod:`gateway.shared_state`); the first key sync round also
finishes before the app serves.

Auth (``MODEL_SERVICE_AUTH``, see ``common/auth.py`` and ``gateway/access.py``) is one dependency per
router; the user-key file is read in the factory, so a broken one stops start-up, not a request.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from common.auth import Authenticator, AuthSettings, Role
from common.http_pool import pooled_client
from common.service import metrics_router, service_app
from gateway.access import guarded
from gateway.circuit import CircuitBoard
from gateway.deps import GatewayState
from gateway.follower import RegistryFollower
from gateway.keys import KeyStore
from gateway.limits import Limiter
from gateway.metrics import GatewayMetrics
from gateway.probes import UpstreamProber
from gateway.routes import admin, openai, ops
from gateway.routes.console import install_console
from gateway.routing import Rules
from gateway.settings import GatewaySettings
from gateway.shared_state import SharedState
from gateway.upstreams import Upstreams
from gateway.usage import UsageLog
from service_registry.client import RegistryClient

log = logging.getLogger(__name__)


def upstream_client(settings: GatewaySettings) -> httpx.AsyncClient:
    """The client for every worker call, with explicit timeouts and a bounded pool, split into small
    pools (``common.http_pool``: one big httpcore pool costs more per request the more connections it
    holds). No proxy from the environment: an HTTP(S)_PROXY meant for the outside world must not
    catch worker traffic."""
    timeout = httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s)
    limits = httpx.Limits(max_connections=settings.max_connections,
                          max_keepalive_connections=settings.max_keepalive_connections)
    return pooled_client(limits, timeout=timeout)


async def start_shared_state(stack: contextlib.AsyncExitStack, settings: GatewaySettings, keys: KeyStore,
                             fallback: Limiter, usage: UsageLog) -> SharedState:
    """Connect to the shared store and start the key sync and usage rollup; all undone by ``stack``.

    A store that cannot be reached does not stop start-up: the gateway serves on its own, warns, and
    joins the others once the store answers."""
    from gateway.shared_state import build

    shared = build(settings, keys, fallback)
    stack.push_async_callback(shared.store.aclose)
    stack.push_async_callback(shared.limits.drain)
    await shared.keys.start()
    stack.push_async_callback(shared.keys.stop)
    shared.usage.start()
    usage.tap = shared.usage.add
    stack.push_async_callback(shared.usage.stop)
    return shared


def create_app(settings: GatewaySettings | None = None, auth: AuthSettings | None = None) -> FastAPI:
    """``auth``: the API-key settings (default: ``MODEL_SERVICE_AUTH`` and friends from the environment)."""
    settings = settings or GatewaySettings()
    auth = auth or AuthSettings()
    service_headers = auth.outgoing_headers()
    metrics = GatewayMetrics()
    api_keys = settings.api_keys()  # read (and checked) here: bad config stops start-up, not a request
    keys = KeyStore(settings.keys_file)
    keys.load()
    rules = Rules(policy=settings.routing_policy, cooldown_s=settings.circuit_cooldown_s,
                  gpu_memory_limit=settings.gpu_memory_limit,
                  retry_after_s=max(1, round(settings.probe_interval_s)))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        circuits = CircuitBoard(settings.circuit_failures, settings.circuit_cooldown_s)
        usage = UsageLog(settings.usage_log, max_bytes=settings.usage_log_max_bytes,
                         backup_count=settings.usage_log_backup_count, content=settings.usage_log_content,
                         enabled=settings.usage_log_enabled)
        async with contextlib.AsyncExitStack() as stack:
            usage.start()
            stack.callback(usage.stop)
            client = await stack.enter_async_context(upstream_client(settings))
            registry = None
            if settings.registry_url:
                registry = await stack.enter_async_context(
                    RegistryClient(settings.registry_url, timeout_s=settings.probe_timeout_s,
                                   headers=service_headers))
            elif not settings.workers:
                log.warning("neither GATEWAY_WORKERS nor GATEWAY_REGISTRY_URL is set: every model request "
                            "will be answered 503")
            prober = UpstreamProber(client, settings.workers, timeout=settings.probe_timeout_s,
                                    headers=service_headers) if settings.workers else None
            follower = RegistryFollower(registry, settle_s=settings.registry_settle_s) if registry is not None else None
            upstreams = Upstreams(prober, follower, interval_s=settings.probe_interval_s,
                                  timeout_s=settings.probe_timeout_s, on_recovered=circuits.reset)
            await upstreams.start()
            stack.push_async_callback(upstreams.stop)
            metrics.watch_snapshot(lambda: upstreams.snapshot)
            limits = Limiter()
            shared = await start_shared_state(stack, settings, keys, limits, usage) if settings.redis_url else None
            app.state.gateway = GatewayState(settings=settings, client=client, upstreams=upstreams,
                                             metrics=metrics, keys=keys, circuits=circuits, rules=rules,
                                             api_keys=api_keys, service_headers=service_headers,
                                             limits=shared.limits if shared is not None else limits, usage=usage,
                                             shared=shared)
            try:
                yield
            finally:
                app.state.gateway = None
                metrics.watch_snapshot(lambda: None)

    # No auth gate: the routers' guards check the keys and log every refusal in the usage log. Requests
    # are counted per resolved model where they are relayed (gateway/relay.py), not by the middleware.
    app = service_app("Model Service Gateway", settings=settings, authenticator=Authenticator(auth, keys),
                      lifespan=lifespan, auth_gate=False)
    app.include_router(ops.health_router)
    app.include_router(openai.router, dependencies=guarded(Role.USER))
    app.include_router(ops.router, dependencies=guarded(Role.SERVICE))
    app.include_router(metrics_router(metrics.registry), dependencies=guarded(Role.SERVICE), tags=["operations"])
    app.include_router(admin.router, dependencies=guarded(Role.ADMIN))
    install_console(app)
    return app
