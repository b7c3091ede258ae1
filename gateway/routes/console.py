"""The web console (``/ui``, with ``/`` redirecting there) and the routes only it needed: for the admin
key, the recent requests of the usage log (``GET /admin/usage/recent``) and usage over time
(``GET /admin/usage/series``); for any key, its own usage (``GET /usage/me``: totals, series and recent
requests of the caller's key only; the admin key sees every key's). The model store's routes are in
:mod:`gateway.routes.store`, the running deployment's in :mod:`gateway.routes.deployment`.

The pages and assets are open: they hold no data. Everything they show comes from the gateway's JSON
API, called with the key the person signed in with, so the API's own guards decide what each key sees.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from common.auth import Role, principal_of
from common.errors import InvalidRequestError
from common.offline_docs import SAME_ORIGIN_ONLY
from gateway.access import guarded
from gateway.console import STATIC
from gateway.deps import GatewayState, StateDep
from gateway.routes.admin import WINDOW_HELP, parse_moment
from gateway.routes.deployment import router as deployment_router
from gateway.routes.store import router as store_router
from gateway.usage import newest_requests
from gateway.usage_series import series, window

pages = APIRouter(include_in_schema=False)
recent_router = APIRouter(tags=["admin"])
mine_router = APIRouter(tags=["usage"])
SERIES_WINDOW_S = 3600.0  # the charts' default: the last hour
Since = Annotated[str | None, Query(description=WINDOW_HELP + "; default: an hour before 'until'")]
Until = Annotated[str | None, Query(description=WINDOW_HELP + "; default: now")]
Bucket = Annotated[int, Query(ge=1, le=86400, description="seconds per bucket (widened to at most 500 buckets)")]

# What a recent-requests row shows: the request's facts, never prompt or answer text, whatever the log keeps.
RECENT_FIELDS = ("time", "request_id", "key_id", "model", "replica", "endpoint", "status", "stream",
                 "prompt_tokens", "completion_tokens", "total_tokens", "latency_ms", "ttft_ms", "error")


@pages.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@pages.get("/ui")
async def ui_slash() -> RedirectResponse:
    # Relative asset URLs in the page resolve under /ui/ only with the trailing slash.
    return RedirectResponse("/ui/", status_code=307)


@pages.get("/ui/")
async def ui() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache",
                                                        "content-security-policy": SAME_ORIGIN_ONLY})


@pages.get("/ui/config.json")
async def config(request: Request) -> dict[str, Any]:
    """What the page must know before anything else: whether to ask for a key."""
    return {"auth": request.app.state.authenticator.enabled}


@recent_router.get("/admin/usage/recent")
async def recent_usage(state: StateDep,
                       limit: Annotated[int, Query(ge=1, le=1000, description="how many lines")] = 50,
                       ) -> dict[str, Any]:
    """The last ``limit`` request lines of the usage log (rotated files included), newest first."""
    return {"object": "list", "data": await _recent(state, limit, None)}


@recent_router.get("/admin/usage/series")
async def usage_series(state: StateDep, since: Since = None, until: Until = None, bucket_s: Bucket = 60,
                       ) -> dict[str, Any]:
    """Requests, errors, tokens, latency and TTFT percentiles per time bucket, by model and by key."""
    return await _series(state, since, until, bucket_s, None)


@mine_router.get("/usage/me")
async def my_usage(request: Request, state: StateDep, since: Since = None, until: Until = None,
                   bucket_s: Bucket = 60, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict[str, Any]:
    """The caller's own usage: totals, the series and its recent requests. A user key sees only its own
    lines; the admin key (and anyone with keys off) sees every key's."""
    principal = principal_of(request)
    key_id = None if principal.role == Role.ADMIN else principal.key_id
    low, high = _window(since, until)
    summary = await state.usage.summary(low, high, key_id)
    return {"object": "usage.me", "key_id": principal.key_id, "summary": summary,
            "series": await _series(state, since, until, bucket_s, key_id),
            "recent": await _recent(state, limit, key_id)}


async def _recent(state: GatewayState, limit: int, key_id: str | None) -> list[dict[str, Any]]:
    await state.usage.flush()
    return await asyncio.to_thread(_last_requests, state.usage.files(), limit, key_id)


async def _series(state: GatewayState, since: str | None, until: str | None, bucket_s: int,
                  key_id: str | None) -> dict[str, Any]:
    low, high = _window(since, until)
    await state.usage.flush()
    return await asyncio.to_thread(series, state.usage.files(), low, high, bucket_s, key_id)


def _window(since: str | None, until: str | None) -> tuple[datetime, datetime]:
    low, high = window(parse_moment(since, "since"), parse_moment(until, "until"), SERIES_WINDOW_S)
    if high <= low:
        raise InvalidRequestError("'until' is not after 'since'.", param="until", code="invalid_value")
    return low, high


def _last_requests(paths: list[Path], limit: int, key_id: str | None) -> list[dict[str, Any]]:
    return [{name: entry.get(name) for name in RECENT_FIELDS} for entry in newest_requests(paths, limit, key_id)]


def install_console(app: FastAPI) -> None:
    """The console's pages and assets (open), its admin-only data routes and "my usage" (any key)."""
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="console")
    app.include_router(pages)
    app.include_router(recent_router, dependencies=guarded(Role.ADMIN))
    app.include_router(store_router, dependencies=guarded(Role.ADMIN))
    app.include_router(deployment_router, dependencies=guarded(Role.ADMIN))
    app.include_router(mine_router, dependencies=guarded(Role.USER))
