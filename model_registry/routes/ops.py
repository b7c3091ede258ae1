"""``/health`` (open when auth is on: health checks carry no key) and ``/metrics`` (service token)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from model_registry.deps import StateDep
from model_registry.errors import StorageError

router = APIRouter()
health_router = APIRouter()


@health_router.get("/health")
async def health(state: StateDep) -> Any:
    body: dict[str, Any] = {"status": "ok", "storage": state.store.describe(), "jobs": state.jobs.counts()}
    try:
        await asyncio.to_thread(state.store.check)
    except StorageError as exc:
        return JSONResponse({**body, "status": "error", "detail": exc.message}, status_code=503)
    return body


@router.get("/metrics")
async def metrics(state: StateDep) -> Response:
    data = await asyncio.to_thread(generate_latest, state.metrics.registry)
    return Response(data, media_type=CONTENT_TYPE_LATEST)
