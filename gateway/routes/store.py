"""The model store through the gateway (admin key): what the model registry holds, and its changes.

``GET /admin/store`` reads the model registry's ``/models`` and ``/jobs`` with the service token. The
changes (pull from Hugging Face, import a folder on the registry host, move an alias, delete a revision)
are forwarded to the model registry (``GATEWAY_MODEL_REGISTRY_URL``) with the caller's own admin key, so
the registry's guard decides too, and its answer (a job with progress, the model record, an
OpenAI-shaped error) comes back unchanged.

A revision is refused deletion (409 ``revision_in_use``) while a worker may serve it: the gateway reads
its routing snapshot first. Workers load an alias (``current`` unless pinned), so a revision that an
alias points to is in use while any replica serves the model. A worker pinned to a bare revision, or
one started before its alias moved, is not seen: workers do not report the revision they loaded.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import APIRouter, Request, Response

from common.errors import APIError, NotFoundError, ServiceUnavailableError
from common.probes import describe
from gateway.deps import GatewayState, StateDep

router = APIRouter(tags=["admin"])
FORWARDED_TIMEOUT_S = 30.0  # the registry answers at once: downloads run as jobs


class RevisionInUseError(APIError):
    status, type, code = 409, "invalid_request_error", "revision_in_use"


class StoreNotConfiguredError(NotFoundError):
    """404: this gateway has no model store to change (a setting, not a failure to retry later)."""

    code = "model_registry_not_configured"


def registry_base(state: GatewayState) -> str:
    base = state.settings.model_registry_url
    if not base:
        raise StoreNotConfiguredError("The gateway does not know the model registry: set GATEWAY_MODEL_REGISTRY_URL.")
    return base.rstrip("/")


@router.get("/admin/store")
async def store(state: StateDep) -> dict[str, Any]:
    """The model registry's ``/models`` and ``/jobs``, side by side, plus which models replicas serve."""
    if not state.settings.model_registry_url:
        return {"configured": False, "models": [], "jobs": [], "served": {}}
    base = registry_base(state)
    try:
        models, jobs = await asyncio.gather(*(state.client.get(f"{base}{path}", headers=state.service_headers,
                                                               timeout=10) for path in ("/models", "/jobs")))
        models.raise_for_status()
        jobs.raise_for_status()
        return {"configured": True, "models": models.json()["data"], "jobs": jobs.json()["data"],
                "served": served_by(state)}
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise ServiceUnavailableError(f"The model registry did not answer: {describe(exc)}") from None


def served_by(state: GatewayState) -> dict[str, list[str]]:
    """Model id -> the URLs of the replicas that serve it, healthy or not (one may come back)."""
    out: dict[str, list[str]] = {}
    for replica in state.upstreams.snapshot.replicas:
        if replica.model is not None:
            out.setdefault(replica.model, []).append(replica.url)
    return out


@router.post("/admin/store/models/{model_id:path}/download", status_code=202)
async def download(model_id: str, request: Request, state: StateDep) -> Response:
    """Pull from Hugging Face (``{"revision", "model_type", "allow_patterns", "ignore_patterns"}``): a job."""
    return await forward(state, request, "POST", f"/models/{model_id}/download")


@router.post("/admin/store/models/{model_id:path}/import", status_code=202)
async def import_folder(model_id: str, request: Request, state: StateDep) -> Response:
    """Import a folder or GGUF file on the registry host (``{"path", "model_type", "revision"}``): a job."""
    return await forward(state, request, "POST", f"/models/{model_id}/import")


@router.put("/admin/store/models/{model_id:path}/aliases/{alias}")
async def set_alias(model_id: str, alias: str, request: Request, state: StateDep) -> Response:
    """Point ``alias`` at a revision (``{"revision"}``): moving ``current`` back is a rollback."""
    return await forward(state, request, "PUT", f"/models/{model_id}/aliases/{alias}")


@router.delete("/admin/store/models/{model_id:path}/revisions/{revision}")
async def delete_revision(model_id: str, revision: str, request: Request, state: StateDep) -> Response:
    """Delete a revision no worker may be serving; 409 ``revision_in_use`` otherwise."""
    base = registry_base(state)
    replicas = served_by(state).get(model_id, [])
    if replicas:
        record = await _call(state, "GET", f"{base}/models/{model_id}", headers=state.service_headers)
        if record.status_code == 200:
            aliases = [name for name, target in record.json().get("aliases", {}).items() if target == revision]
            if aliases:
                raise RevisionInUseError(
                    f"Revision '{revision}' of '{model_id}' is in use: alias {', '.join(aliases)} points to it "
                    f"and {len(replicas)} replica(s) serve the model ({', '.join(replicas)}). Move the alias "
                    "and roll the workers first.", param="revision")
    return await forward(state, request, "DELETE", f"/models/{model_id}/revisions/{revision}")


async def forward(state: GatewayState, request: Request, method: str, path: str) -> Response:
    """``request``'s body to the model registry with the caller's own key; its answer back as it is."""
    headers = {"content-type": "application/json", **caller_key(request)}
    answer = await _call(state, method, f"{registry_base(state)}{path}", headers=headers,
                         content=await request.body())
    return Response(answer.content, status_code=answer.status_code,
                    media_type=answer.headers.get("content-type", "application/json"))


def caller_key(request: Request) -> dict[str, str]:
    """The caller's own Authorization header, for a service that checks the key again itself."""
    return {"authorization": request.headers["authorization"]} if "authorization" in request.headers else {}


async def _call(state: GatewayState, method: str, url: str, **kw: Any) -> httpx.Response:
    try:
        return await state.client.request(method, url, timeout=FORWARDED_TIMEOUT_S, **kw)
    except httpx.HTTPError as exc:
        raise ServiceUnavailableError(f"The model registry did not answer: {describe(exc)}") from None
