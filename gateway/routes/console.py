"""The web console (``/ui``, with ``/`` redirecting there) and the two routes only it needed (admin key):
the recent requests of the usage log (``GET /admin/usage/recent``) and what the model store holds
(``GET /admin/store``: the model registry's models and jobs, read with the service token).

The pages and assets are open: they hold no data. Everything they show comes from the gateway's JSON
API, called with the key the person signed in with, so the API's own guards decide what each key sees.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from common.auth import Role
from common.errors import ServiceUnavailableError
from common.offline_docs import SAME_ORIGIN_ONLY
from common.probes import describe
from gateway.access import guarded
from gateway.console import STATIC
from gateway.deps import StateDep
from gateway.usage import newest_requests

pages = APIRouter(include_in_schema=False)
recent_router = APIRouter(tags=["admin"])

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
    await state.usage.flush()
    rows = await asyncio.to_thread(_last_requests, state.usage.files(), limit)
    return {"object": "list", "data": rows}


@recent_router.get("/admin/store")
async def store(state: StateDep) -> dict[str, Any]:
    """The model registry's ``/models`` and ``/jobs`` (``GATEWAY_MODEL_REGISTRY_URL``), side by side."""
    base = state.settings.model_registry_url
    if not base:
        return {"configured": False, "models": [], "jobs": []}
    try:
        models, jobs = await asyncio.gather(*(state.client.get(f"{base.rstrip('/')}{path}",
                                                               headers=state.service_headers, timeout=10)
                                              for path in ("/models", "/jobs")))
        models.raise_for_status()
        jobs.raise_for_status()
        return {"configured": True, "models": models.json()["data"], "jobs": jobs.json()["data"]}
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise ServiceUnavailableError(f"The model registry did not answer: {describe(exc)}") from None


def _last_requests(paths: list[Path], limit: int) -> list[dict[str, Any]]:
    return [{name: entry.get(name) for name in RECENT_FIELDS} for entry in newest_requests(paths, limit)]


def install_console(app: FastAPI) -> None:
    """The console's pages and assets (open), and its admin-only data route."""
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="console")
    app.include_router(pages)
    app.include_router(recent_router, dependencies=guarded(Role.ADMIN))
