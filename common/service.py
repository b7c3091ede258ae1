"""What every FastAPI service here is built on, written once: the app shell, the state dependency and
the ``/metrics`` route.

Each service's ``create_app`` calls :func:`service_app` and then includes its own routers, each with
the role it needs. The shell puts the same pieces in the same order on all four, outermost first:

1. request metrics (when the service counts requests here), so 413s and 408s are counted too;
2. body limits (``*_MAX_BODY_BYTES``, ``*_BODY_TIMEOUT_S``, ``*_BODY_DEADLINE_S``);
3. the auth gate: with keys on, a request without a valid key gets its 401 before its body is read
   (not on the gateway, whose router guards log every refusal);
4. the one error table, then the routes, whose routers say which role may call them.

``/docs`` and ``/redoc`` load Swagger UI and ReDoc from the service itself (common/offline_docs.py),
not from a CDN: the sites this runs in have no internet, where FastAPI's default pages stay blank.
The assets are served under :data:`common.auth.DOCS_ASSETS` (open like ``/docs``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from common.auth import DOCS_ASSETS, Authenticator, install_auth
from common.body_limit import install_body_limits
from common.errors import ServiceUnavailableError, install_error_handlers
from common.metrics import ObserveRequest, RequestMetricsMiddleware
from common.offline_docs import install_offline_docs
from common.settings import ServiceSettings

T = TypeVar("T")
VERSION = "0.1.0"


def service_app(title: str, *, settings: ServiceSettings, authenticator: Authenticator,
                lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
                observe_request: ObserveRequest | None = None, auth_gate: bool = True) -> FastAPI:
    """A FastAPI app with the error table, auth, body limits and (given ``observe_request``) request
    metrics installed; the caller adds its routers.

    ``auth_gate=False`` leaves the key check to the routers' dependencies alone: the gateway's write
    every refusal to its usage log (the audit of who knocked), which a gate answering first would skip.
    Its OpenAI routes read their bodies themselves, after the check."""
    app = FastAPI(title=title, version=VERSION, lifespan=lifespan, docs_url=None, redoc_url=None)
    install_offline_docs(app, DOCS_ASSETS)
    install_error_handlers(app)
    install_auth(app, authenticator, gate=auth_gate)
    install_body_limits(app, settings)
    if observe_request is not None:
        app.add_middleware(RequestMetricsMiddleware, observe=observe_request)
    return app


def state_getter(attr: str, kind: type[T], what: str) -> Callable[[Request], Coroutine[Any, Any, T]]:
    """The dependency that hands routes what the app keeps on ``app.state.<attr>``; ``kind`` types it.

    ``async`` on purpose: FastAPI runs a plain ``def`` dependency in the thread pool, a thread hop per
    request that cost more than the gateway's routing. Until the lifespan has put the state there (an
    app driven without its lifespan), the answer is a 503 saying ``what`` is starting up.

    Use: ``get_state = state_getter("gateway", GatewayState, "gateway")`` and
    ``StateDep = Annotated[GatewayState, Depends(get_state)]``."""
    message = f"The {what} is starting up; try again in a moment."

    async def get_state(request: Request) -> T:
        state = getattr(request.app.state, attr, None)
        if state is None:
            raise ServiceUnavailableError(message)
        return state

    get_state.__qualname__ = get_state.__name__ = f"get_{attr}"
    return get_state


def metrics_router(registry: CollectorRegistry) -> APIRouter:
    """``GET /metrics``: the Prometheus text of the app's own registry. Include it with the role that
    may scrape (the service token). Rendered in a thread: collectors may read NVML or the store."""
    router = APIRouter()

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(await asyncio.to_thread(generate_latest, registry), media_type=CONTENT_TYPE_LATEST)

    return router
