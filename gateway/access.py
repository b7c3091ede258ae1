"""Step two of a proxied request, authorize and limit; and who may call what on the gateway at all.

Route access builds on the shared check in :mod:`common.auth`:

| routes | keys admitted |
|---|---|
| ``/health`` | anyone (load balancers and container health checks carry no key) |
| ``/v1/*`` (OpenAI) | user keys, admin |
| ``/services``, ``/gpu-stats``, ``/metrics`` | service token, admin |
| ``/admin/*``, ``/usage`` | admin |
| ``/usage/me`` | user keys (their own lines), admin (every key's) |

Before any worker is called, :func:`admit` checks a proxied request: the caller's key must allow the
model it resolves to (a default filled in counts; 403 ``model_not_allowed``), images must go to a model
that takes them, the request must be within the gateway's caps (``max_tokens``, embedding inputs), and
the key within its rate limits (429). A refused request never reaches a worker. Its fallbacks are only
models the key may use. With auth off every caller is the anonymous admin and none of this costs more
than a function call. Refused attempts are written to the usage log, so it doubles as an audit trail
of who knocked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.params import Depends as DependsParam

from common.auth import Principal, Role, bearer_token, digest, require
from common.errors import APIError, PermissionDeniedError
from gateway.accounting import usage_line
from gateway.deps import GatewayState
from gateway.limits import Grant, check_request_caps
from gateway.request import ProxyRequest
from gateway.routing import check_accepts_images, fallback_chain


@dataclass(frozen=True)
class AdmittedRequest:
    """An admitted request: the key's grant (headers, token charge) and the models it may go to."""

    grant: Grant
    models: list[str]  # the requested model, then the fallbacks this key may use


async def admit(state: GatewayState, principal: Principal, request: ProxyRequest) -> AdmittedRequest:
    """Authorize and limit ``request``: 403, 400 or 429 before any worker is called, else an admission
    that has taken one request from the key's budget."""
    check_model_allowed(principal, request.model)
    if request.images:
        check_accepts_images(state.upstreams.snapshot, request.model)
    settings = state.settings
    check_request_caps(request.payload, generates=request.generates,
                       embeds=request.endpoint.capability == "embeddings", max_tokens=settings.max_tokens_limit,
                       max_inputs=settings.max_embedding_inputs)
    grant = await state.limits.acquire(principal)
    models = [m for m in fallback_chain(request.model, settings.fallbacks) if principal.allows_model(m)]
    return AdmittedRequest(grant, models)


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
    state.usage.write(usage_line(request_id=request.headers.get("x-request-id"), key_id=key_id,
                                 endpoint=request.url.path, status=exc.status, error=exc.code or exc.type,
                                 client_ip=request.client.host if request.client else None))
