"""``/health``: open when auth is on (health checks carry no key). ``/metrics`` is the shared route
(``common/service.py``), behind the service token."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from model_registry.deps import StateDep
from model_registry.errors import StorageError

health_router = APIRouter()


@health_router.get("/health")
async def health(state: StateDep) -> Any:
    body: dict[str, Any] = {"status": "ok", "storage": state.store.describe(), "jobs": state.jobs.counts()}
    try:
        await asyncio.to_thread(state.store.check)
    except StorageError as exc:
        return JSONResponse({**body, "status": "error", "detail": exc.message}, status_code=503)
    return body
