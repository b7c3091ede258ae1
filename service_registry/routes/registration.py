"""Workers announce themselves: register (201 new / 200 known = heartbeat), heartbeat, deregister."""

from __future__ import annotations

import logging
import time

import httpx
from fastapi import APIRouter, Response

from common.errors import InvalidRequestError
from service_registry.deps import StateDep
from service_registry.schemas import DeregistrationAnswer, HeartbeatAnswer, Registration, RegistrationAnswer

log = logging.getLogger(__name__)
router = APIRouter(prefix="/register", tags=["registration"])

_NOT_FOUND = {404: {"description": "unknown id: register again"}, 409: {"description": "a static upstream"}}

@router.post("", response_model=RegistrationAnswer, status_code=201,
             responses={200: {"description": "already registered: counted as a heartbeat"}, 409: {}})
async def register(body: Registration, state: StateDep, response: Response) -> RegistrationAnswer:
    _check_reachable_form(body.url)
    record, created = state.registry.register(body, now=time.time())
    if created:
        log.info("registered %s at %s serving %s", record.id, record.url, ", ".join(record.models))
    else:
        response.status_code = 200
    state.metrics.registrations.labels("registered" if created else "refreshed").inc()
    state.metrics.record_snapshot(state.registry.snapshot)
    return RegistrationAnswer(id=record.id, created=created, heartbeat_interval_s=record.heartbeat_interval_s,
                              expires_after_s=record.expires_after_s or 0.0)

def _check_reachable_form(url: str) -> None:
    """400 for a URL the probes' HTTP client cannot even build a request for (control characters):
    registered, it would fail every poll round, not just its own probe."""
    try:
        httpx.URL(url).join("/health")
    except httpx.InvalidURL as exc:
        raise InvalidRequestError(f"Invalid value for 'url': {str(exc).rstrip('.')}.", param="url",
                                  code="invalid_value") from None

@router.post("/{service_id:path}/heartbeat", response_model=HeartbeatAnswer, responses=_NOT_FOUND)
async def heartbeat(service_id: str, state: StateDep) -> HeartbeatAnswer:
    """Keeps a registration alive. A 404 means the registry forgot it (e.g. restarted): register again."""
    record = state.registry.heartbeat(service_id, now=time.time())
    state.metrics.registrations.labels("heartbeat").inc()
    return HeartbeatAnswer(id=record.id, expires_after_s=record.expires_after_s or 0.0)

@router.delete("/{service_id:path}", response_model=DeregistrationAnswer, responses=_NOT_FOUND)
async def deregister(service_id: str, state: StateDep) -> DeregistrationAnswer:
    record = state.registry.deregister(service_id)
    log.info("deregistered %s at %s", record.id, record.url)
    state.metrics.registrations.labels("deregistered").inc()
    state.metrics.record_snapshot(state.registry.snapshot)
    return DeregistrationAnswer(id=record.id)
