"""Operator endpoints: liveness, the replica table, GPU facts from every worker, and metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import APIRouter
from starlette.responses import Response

from gateway.deps import StateDep
from gateway.upstreams import Replica

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health(state: StateDep) -> dict[str, Any]:
    """Always 200 while the gateway runs; ``degraded`` says no worker can take requests right now."""
    snapshot = state.upstreams.snapshot
    healthy = snapshot.healthy()
    models = sorted({r.model for r in healthy if r.model is not None})
    ok = bool(healthy)
    return {
        "status": "ok" if ok else "degraded",
        "detail": None if ok else "The gateway is up but no model worker is healthy; requests get 503.",
        "replicas": len(snapshot.replicas),
        "healthy_replicas": len(healthy),
        "models": models,
        "checked_at": snapshot.taken_at,
    }


@router.get("/services")
async def services(state: StateDep) -> dict[str, Any]:
    snapshot = state.upstreams.snapshot
    in_flight = state.in_flight.view()
    rows = [
        {
            "url": r.url, "model": r.model, "type": r.type, "healthy": r.healthy, "reason": r.reason,
            "last_seen": r.last_seen, "latency_ms": r.latency_ms, "in_flight": in_flight.get(r.url, 0),
        }
        for r in snapshot.replicas
    ]
    return {"object": "list", "data": rows, "checked_at": snapshot.taken_at}


@router.get("/gpu-stats")
async def gpu_stats(state: StateDep) -> dict[str, Any]:
    """Every replica's ``/gpu-stats``, fetched concurrently; a failing one carries an error instead."""
    replicas = state.upstreams.snapshot.replicas
    timeout = state.settings.probe_timeout_s
    rows = await asyncio.gather(*(_one_gpu_stats(state.client, r, timeout) for r in replicas))
    return {"object": "list", "data": list(rows)}


async def _one_gpu_stats(client: httpx.AsyncClient, replica: Replica, limit_s: float) -> dict[str, Any]:
    row: dict[str, Any] = {"url": replica.url, "model": replica.model, "stats": None, "error": None}
    if not replica.healthy:
        row["error"] = f"replica is not healthy ({replica.reason})"
        return row
    try:
        resp = await client.get(f"{replica.url}/gpu-stats", timeout=limit_s)
        resp.raise_for_status()
        row["stats"] = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
    return row


@router.get("/metrics")
async def metrics(state: StateDep) -> Response:
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
