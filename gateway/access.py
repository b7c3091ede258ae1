"""Who may call what on the gateway, on top of the shared check in :mod:`common.auth`.

| routes | keys admitted |
|---|---|
| ``/health`` | anyone (load balancers and container health checks carry no key) |
| ``/v1/*`` (OpenAI) | user keys, admin |
| ``/services``, ``/gpu-stats``, ``/metrics`` | service token, admin |
| ``/admin/*``, ``/usage`` | admin |

A user key limited to some models gets 403 ``model_not_allowed`` for any other, checked on the model
the request resolves to (a default filled in counts), and its fallbacks are only models it may use.
With auth off every caller is the anonymous admin and none of this costs more than a function call.
Refused attempts are written to the usage log, so it doubles as an audit trail of who knocked.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import Depends, Request
from fastapi.params import Depends as DependsParam

from common.auth import Principal, Role, bearer_token, digest, require
from common.errors import APIError, PermissionDeniedError
from gateway.usage import utc_iso


def check_model_allowed(principal: Principal, model: str) -> None:
    if not principal.allows_model(model):
        raise PermissionDeniedError(f"This API key may not use the model '{model}'.", param="model",
                                    code="model_not_allowed")


def guard(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    """:func:`common.auth.require` for these roles, logging each refusal in the usage log."""
    check = require(*roles)

    async def check_and_log(request: Request) -> Principal:
        try:
            return await check(request)
        except APIError as exc:
            _log_refusal(request, exc)
            raise

    return check_and_log


def guarded(*roles: Role) -> list[DependsParam]:
    """The ``dependencies=`` of a router behind :func:`guard`."""
    return [Depends(guard(*roles))]


def _log_refusal(request: Request, exc: APIError) -> None:
    state = getattr(request.app.state, "gateway", None)
    if state is None or not state.usage.enabled:
        return
    token = bearer_token(request)
    # Which key was tried, never the key: a valid key on a route it may not use, or a user key of ours
    # (revoked), by id; an unknown key as nothing.
    key_id = None
    if isinstance(exc, PermissionDeniedError):
        key_id = request.app.state.authenticator.authenticate(token).key_id
    elif token:
        key_id = state.keys.known_id(digest(token))
    state.usage.write({
        "time": utc_iso(time.time()), "request_id": request.headers.get("x-request-id"),
        "key_id": key_id, "model": None, "replica": None,
        "endpoint": request.url.path, "status": exc.status, "error": exc.code or exc.type, "stream": False,
        "prompt_tokens": None, "completion_tokens": None, "total_tokens": None, "latency_ms": None,
        "ttft_ms": None, "client_ip": request.client.host if request.client else None,
    })
