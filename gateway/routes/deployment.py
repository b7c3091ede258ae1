"""The running deployment through the gateway (admin key): read it, and apply a changed file.

A local stack (``model-service up``) changes only through its own loopback control endpoint
(stack/control.py), which ``up`` names to the gateway as ``GATEWAY_CONTROL_URL``. These routes forward
to it with the caller's own admin key, so the control endpoint's guard decides too, and pass its answer
back as it is: the file text and running workers, or an apply's plan and progress as JSON lines while
they happen. A bad file is a 400 listing every problem (nothing changes), a second apply while one rolls
is a 409 ``apply_in_progress``. Compose and Kubernetes have no control endpoint (their files are applied
with ``model-service apply --compose`` or Helm): ``GET`` says ``configured: false`` and ``POST`` is a
404 ``deployment_control_not_configured``.
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from common.errors import NotFoundError, ServiceUnavailableError
from common.probes import describe
from gateway.deps import GatewayState, StateDep
from gateway.routes.store import caller_key

router = APIRouter(tags=["admin"])
# An apply waits for models to load and replicas to drain: no read timeout on its progress stream.
APPLY_TIMEOUT = httpx.Timeout(10.0, read=None)
NOT_CONFIGURED = ("This gateway has no deployment to change: only a stack started with 'model-service up' has a "
                  "control endpoint (it sets GATEWAY_CONTROL_URL). Compose and Kubernetes apply their files with "
                  "'model-service apply --compose' or Helm.")


class ControlNotConfiguredError(NotFoundError):
    """404: no ``up`` runs this gateway's stack (a setting, not a failure to retry later)."""

    code = "deployment_control_not_configured"


class ApplyBody(BaseModel):
    text: str = Field(description="the whole deployment file (YAML), as `model-service apply FILE` reads it")
    source: str = Field(default="deployment.yaml", description="the name problems are reported against")


def control_base(state: GatewayState) -> str:
    base = state.settings.control_url
    if not base:
        raise ControlNotConfiguredError(NOT_CONFIGURED)
    return base.rstrip("/")


@router.get("/admin/deployment", response_model=None)
async def running_deployment(request: Request, state: StateDep) -> dict[str, Any] | Response:
    """The running deployment file's text and workers (``configured: false`` without a control endpoint)."""
    if not state.settings.control_url:
        return {"configured": False, "message": NOT_CONFIGURED}
    answer = await _send(state, state.client.build_request("GET", f"{control_base(state)}/deployment",
                                                           headers=caller_key(request), timeout=10.0))
    if answer.status_code != 200:
        return Response(answer.content, status_code=answer.status_code, media_type="application/json")
    return {"configured": True, **answer.json()}


@router.post("/admin/deployment/apply", response_class=StreamingResponse,
             responses={200: {"content": {"application/x-ndjson": {}}}})
async def apply(body: ApplyBody, request: Request, state: StateDep) -> Response:
    """Apply a changed file, rolling; the plan, then each replica's progress, then ``done``, as JSON lines."""
    outgoing = state.client.build_request("POST", f"{control_base(state)}/apply", json=body.model_dump(),
                                          headers=caller_key(request), timeout=APPLY_TIMEOUT)
    answer = await _send(state, outgoing, stream=True)
    if answer.status_code >= 400:
        content = await answer.aread()
        await answer.aclose()
        return Response(content, status_code=answer.status_code, media_type="application/json")
    return StreamingResponse(answer.aiter_raw(), media_type="application/x-ndjson",
                             background=BackgroundTask(answer.aclose))


async def _send(state: GatewayState, outgoing: httpx.Request, stream: bool = False) -> httpx.Response:
    try:
        return await state.client.send(outgoing, stream=stream)
    except httpx.HTTPError as exc:
        raise ServiceUnavailableError(f"The stack's control endpoint did not answer (is 'model-service up' still "
                                      f"starting or stopped?): {describe(exc)}") from None

