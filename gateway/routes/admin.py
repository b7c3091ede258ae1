"""Admin endpoints (admin key only): user API keys, and usage summed up from the usage log.

``POST /admin/keys`` answers the new key's secret, once; nothing can show it again. ``GET /admin/keys``
lists every key, revoked ones included, without secrets or digests. ``DELETE /admin/keys/{key_id}``
revokes a key for the very next request. ``GET /usage`` sums requests, errors and tokens per key and
per model over a time window. Key changes are written to the usage log as audit lines.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from common.auth import principal_of
from common.errors import InvalidRequestError
from gateway.deps import GatewayState, StateDep
from gateway.keys import CreatedKey, KeyListView, KeyRequest, KeyView
from gateway.usage import utc_iso

router = APIRouter(tags=["admin"])


@router.post("/admin/keys", response_model=CreatedKey, status_code=201)
async def create_key(body: KeyRequest, request: Request, state: StateDep) -> CreatedKey:
    """Make a user key; the answer's ``key`` is the secret, shown this once."""
    created = await state.keys.create(body)
    _audit(state, request, "key_created", created)
    return created


@router.get("/admin/keys", response_model=KeyListView)
async def list_keys(state: StateDep) -> KeyListView:
    return KeyListView(data=state.keys.list())


@router.delete("/admin/keys/{key_id}", response_model=KeyView)
async def revoke_key(key_id: str, request: Request, state: StateDep) -> KeyView:
    """Revoke a key: its next request gets 401. Revoking it again answers the same; unknown: 404."""
    revoked = await state.keys.revoke(key_id)
    _audit(state, request, "key_revoked", revoked)
    return revoked


class UsageRow(BaseModel):
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class UsageSummary(UsageRow):
    object: str = "usage.summary"
    since: str | None
    until: str | None
    by_key: dict[str, UsageRow]
    by_model: dict[str, UsageRow]
    # Whose requests these are: "all gateways" when replicas share state and the store answered.
    scope: Literal["this gateway", "all gateways"] = "this gateway"


WINDOW_HELP = "ISO 8601 time (2026-01-31T12:00:00Z; no zone = UTC) or Unix seconds"


@router.get("/usage", response_model=UsageSummary)
async def usage(state: StateDep, since: Annotated[str | None, Query(description=WINDOW_HELP)] = None,
                until: Annotated[str | None, Query(description=WINDOW_HELP)] = None) -> dict[str, Any]:
    """Requests, errors (status >= 400) and tokens in ``[since, until)`` from the usage log, rotated
    files included: in all, by key id and by model. With shared state, every replica's requests, from
    the store's per-minute rollups (:mod:`gateway.shared_usage`)."""
    low, high = parse_moment(since, "since"), parse_moment(until, "until")
    if low is not None and high is not None and high < low:
        raise InvalidRequestError("'until' is before 'since'.", param="until", code="invalid_value")
    if state.shared is not None:
        return await state.shared.usage.summary(low, high, fallback=state.usage.summary)
    return await state.usage.summary(low, high)


def parse_moment(value: str | None, param: str) -> datetime | None:
    """An ISO 8601 time (naive = UTC) or Unix seconds, as an aware datetime; 400 naming ``param``."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        moment = datetime.fromtimestamp(float(text), UTC)
    except (ValueError, OverflowError, OSError):
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise InvalidRequestError(f"'{param}' must be an ISO 8601 time or Unix seconds, not {value!r}.",
                                      param=param, code="invalid_value") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        moment.timestamp()
        utc_iso(moment.timestamp())
    except (ValueError, OverflowError, OSError):
        raise InvalidRequestError(f"'{param}' is out of range.", param=param, code="invalid_value") from None
    return moment


def _audit(state: GatewayState, request: Request, event: str, key: KeyView) -> None:
    """One audit line for a key change: who did it, to which key (never the secret)."""
    if not state.usage.enabled:
        return
    state.usage.write({"time": utc_iso(time.time()), "event": event, "key_id": principal_of(request).key_id,
                       "target_key_id": key.id, "target_name": key.name, "endpoint": request.url.path,
                       "client_ip": request.client.host if request.client else None})
