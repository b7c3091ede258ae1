"""Operator endpoints: liveness, the replica table and GPU facts from every worker (``/metrics`` is the
shared route of ``common/service.py``).

``/health`` is on a router of its own: it stays open when auth is on (health checks carry no key);
the rest is for the service token and the admin key.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from fastapi import APIRouter

from common.records import ServiceRecord
from gateway.deps import GatewayState, StateDep
from gateway.routing import gpu_problem, is_usable
from gateway.upstreams import Replica

router = APIRouter(tags=["operations"])
health_router = APIRouter(tags=["operations"])


@health_router.get("/health")
async def health(state: StateDep) -> dict[str, Any]:
    """Always 200 while the gateway runs; ``degraded`` says requests may fail or routing is stale."""
    snapshot = state.upstreams.snapshot
    healthy = snapshot.healthy()
    models = sorted({r.model for r in healthy if r.model is not None})
    follower = state.upstreams.follower
    registry = follower.health() if follower is not None else None
    detail = None
    if not healthy:
        detail = "The gateway is up but no model worker is healthy; requests get 503."
    elif registry is not None and not registry["reachable"]:
        detail = "The service registry is unreachable; routing from its last snapshot."
    elif state.shared is not None and not state.shared.store.reachable:
        detail = "The shared state store is unreachable; limits, keys and usage are this gateway's own."
    body: dict[str, Any] = {
        "status": "degraded" if detail else "ok",
        "detail": detail,
        "replicas": len(snapshot.replicas),
        "healthy_replicas": len(healthy),
        "models": models,
        "checked_at": snapshot.taken_at,
    }
    if registry is not None:
        body["registry"] = registry
    if state.shared is not None:
        body["shared_state"] = {"reachable": state.shared.store.reachable}
    return body


@router.get("/services")
async def services(state: StateDep) -> dict[str, Any]:
    """Every replica as routing sees it: the registry's (or probe's) view plus this gateway's counters."""
    snapshot = state.upstreams.snapshot
    now = time.monotonic()
    circuits = state.circuits.view()
    rows = []
    for r in snapshot.replicas:
        row = {
            "url": r.url, "model": r.model, "type": r.type, "healthy": r.healthy, "reason": r.reason,
            "last_seen": r.last_seen, "latency_ms": r.latency_ms, "source": r.source,
            "service_id": r.service_id, "kind": r.kind, "api_base": r.base, "upstream_model": r.name_upstream(
                r.model) if r.model else None, "priority": r.priority, "capacity": r.capacity,
            "gpu_problem": gpu_problem(r, state.rules.gpu_memory_limit),
            "usable": is_usable(r, circuits, now, state.rules),
        }
        rows.append({**row, **_counters(state, r.url)})
    body: dict[str, Any] = {"object": "list", "data": rows, "checked_at": snapshot.taken_at,
                            "policy": state.rules.policy}
    if state.upstreams.follower is not None:
        body["registry"] = state.upstreams.follower.health()
    return body


def _counters(state: GatewayState, key: str) -> dict[str, Any]:
    """This gateway's own view of one replica: load, accepted requests and its circuit breaker."""
    circuit = state.circuits.get(key)
    return {
        "in_flight": state.in_flight.view().get(key, 0),
        "served": state.metrics.served.get(key, 0),
        "failures": circuit.failures_total,
        "circuit": {"state": circuit.state, "consecutive_failures": circuit.consecutive_failures,
                    "opens": circuit.opens_total},
        "recent": state.metrics.recent.view(key),  # the last minute: p50/p95 latency, requests/s
    }


@router.get("/gpu-stats")
async def gpu_stats(state: StateDep) -> dict[str, Any]:
    """GPU facts of every replica: the registry's last readings for the services it knows (no extra
    call), and a concurrent ``/gpu-stats`` fetch for static workers; a failing one carries an error."""
    replicas = state.upstreams.snapshot.replicas
    follower = state.upstreams.follower
    rows: list[dict[str, Any]] = []
    if follower is not None:
        listed = {r.url for r in replicas if r.source == "registry"}
        rows += [_registry_gpu_row(record) for record in follower.services.data
                 if record.kind == "worker" and record.url in listed]
    static = [r for r in replicas if r.source == "static"]
    timeout = state.settings.probe_timeout_s
    rows += await asyncio.gather(*(_one_gpu_stats(state.client, r, timeout, state.service_headers)
                                   for r in static))
    return {"object": "list", "data": [{**row, **_counters(state, row["url"])} for row in rows]}


def _registry_gpu_row(record: ServiceRecord) -> dict[str, Any]:
    stats = None
    if record.gpu_available is not None:
        stats = {"available": record.gpu_available, "reason": record.gpu_reason,
                 "gpus": [g.model_dump() for g in record.gpus]}
    error = None if stats is not None else (record.gpu_reason or "GPU stats not read yet")
    return {"url": record.url, "model": record.models[0] if record.models else None, "service_id": record.id,
            "source": "registry", "gpu_indices": list(record.gpu_indices), "stats": stats, "error": error}


async def _one_gpu_stats(client: httpx.AsyncClient, replica: Replica, limit_s: float,
                         headers: dict[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = {"url": replica.url, "model": replica.model, "source": "static", "stats": None,
                           "error": None}
    if not replica.healthy:
        row["error"] = f"replica is not healthy ({replica.reason})"
        return row
    try:
        resp = await client.get(f"{replica.url}/gpu-stats", timeout=limit_s, headers=headers)
        resp.raise_for_status()
        row["stats"] = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
    return row
