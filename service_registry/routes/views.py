"""Read-only views over the current snapshot: services, cluster GPUs, liveness (``/metrics`` is the
shared route of ``common/service.py``).

Every view reads ``registry.snapshot`` once and answers from that one object, so an answer never mixes
two poll rounds. Nothing here calls a worker: GPU facts are the ones the last round collected.

``health_router`` stays open when auth is on (container health checks carry no key); ``router`` is
included behind the service-token check.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import APIRouter, Query

from common.records import ServiceRecord, ServiceSnapshot, ServiceStatus
from service_registry.deps import StateDep
from service_registry.errors import ServiceNotFoundError

router = APIRouter(tags=["views"])
health_router = APIRouter(tags=["health"])


@router.get("/services", response_model=ServiceSnapshot)
async def services(
    state: StateDep,
    model: str | None = Query(default=None, description="only services that serve this model id"),
    status: ServiceStatus | None = Query(default=None, description="only services in this state"),
) -> ServiceSnapshot:
    snapshot = state.registry.snapshot
    if model is None and status is None:
        return snapshot
    rows = tuple(s for s in snapshot.data
                 if (model is None or model in s.models) and (status is None or s.status == status))
    return snapshot.model_copy(update={"data": rows})


@router.get("/services/{service_id:path}", response_model=ServiceRecord, responses={404: {}})
async def one_service(service_id: str, state: StateDep) -> ServiceRecord:
    record = state.registry.snapshot.get(service_id)
    if record is None:
        raise ServiceNotFoundError(f"No service with id '{service_id}'.", param="service_id")
    return record


@router.get("/gpu-stats")
async def gpu_stats(state: StateDep) -> dict[str, Any]:
    """One row per GPU of every worker; a worker with no GPU (or unread stats) is one row saying why."""
    snapshot = state.registry.snapshot
    rows: list[dict[str, Any]] = []
    for s in snapshot.data:
        if s.kind != "worker":
            continue  # externals do not expose GPU facts
        owner = {"service_id": s.id, "url": s.url, "models": list(s.models), "status": s.status}
        if s.gpu_available and s.gpus:
            rows += [{**owner, "available": True, **g.model_dump()} for g in s.gpus]
        else:
            reason = s.gpu_reason or ("GPU stats not read yet" if s.gpu_available is None else "no GPU")
            rows.append({**owner, "available": False, "reason": reason})
    gpus = sum(1 for r in rows if r["available"])
    return {"object": "list", "data": rows, "gpus": gpus, "taken_at": snapshot.taken_at}


@health_router.get("/health")
async def health(state: StateDep) -> dict[str, Any]:
    """200 whenever the registry runs; the counts say how much of the cluster is usable."""
    snapshot = state.registry.snapshot
    by_status = Counter(s.status for s in snapshot.data)
    return {
        "status": "ok",
        "services": len(snapshot.data),
        "by_status": {k: by_status.get(k, 0) for k in ("healthy", "unhealthy", "loading", "unknown")},
        "models": sorted({m for s in snapshot.healthy() for m in s.models}),
        "round": snapshot.round,
        "taken_at": snapshot.taken_at,
    }
