"""``/models``: list, inspect, download, import, alias and delete models and revisions.

Two routers, so the app can guard them differently when auth is on: ``router`` reads (the service
token passes), ``admin_router`` changes the store (admin key only).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from common.errors import InvalidRequestError, PermissionDeniedError
from model_registry.deps import StateDep
from model_registry.ids import validate_alias, validate_model_id, validate_revision
from model_registry.routes.files import stream_file
from model_registry.routes.schemas import (
    AliasRequest,
    DownloadRequest,
    GgufExportRequest,
    ImportRequest,
    OnnxExportRequest,
)
from model_registry.sources.folder import check_folder, folder_files, folder_fingerprint
from model_registry.sources.gguf import check_gguf, gguf_fingerprint, is_gguf_path
from model_registry.sources.gguf_export import check_exportable, gguf_revision
from model_registry.sources.onnx_export import check_export_packages, onnx_revision

router = APIRouter()
admin_router = APIRouter()


def split_revision_path(model_id: str, revision: str, rest: str = "") -> tuple[str, str, str]:
    """Re-split at the first ``/revisions/``: a greedy route match may have eaten part of a file path."""
    full = f"{model_id}/revisions/{revision}" + (f"/files/{rest}" if rest else "")
    head, _, tail = full.partition("/revisions/")
    rev, _, path = tail.partition("/files/")
    return validate_model_id(head), validate_revision(rev), path


@router.get("/models")
async def list_models(state: StateDep) -> dict[str, Any]:
    records = await asyncio.to_thread(state.catalog.list_models)
    data = [r.view() for r in records]
    known = {r.id for r in records}
    for job in state.jobs.jobs.values():  # models whose first revision is still on its way
        if job.state in ("queued", "running") and job.model_id not in known:
            known.add(job.model_id)
            data.append({"id": job.model_id, "type": job.model_type, "aliases": {}, "revisions": [],
                         "current": None, "size": 0, "status": "downloading"})
    return {"object": "list", "data": data}


@router.get("/models/{model_id:path}/revisions/{revision}/files/{path:path}")
async def get_file(model_id: str, revision: str, path: str, request: Request, state: StateDep) -> StreamingResponse:
    model_id, revision, path = split_revision_path(model_id, revision, path)
    response = await stream_file(state.catalog, model_id, revision, path, request.headers.get("range"))
    state.metrics.files_served.inc()
    return response


@router.get("/models/{model_id:path}/revisions/{revision}")
async def get_revision(model_id: str, revision: str, state: StateDep) -> dict[str, Any]:
    model_id, revision, _ = split_revision_path(model_id, revision)
    resolved = await asyncio.to_thread(state.catalog.resolve, model_id, revision)
    manifest = await asyncio.to_thread(state.catalog.manifest, model_id, resolved)
    return manifest.model_dump()


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, state: StateDep, revision: str | None = None) -> dict[str, Any]:
    validate_model_id(model_id)
    record = await asyncio.to_thread(state.catalog.get_model, model_id)
    resolved = await asyncio.to_thread(state.catalog.resolve, model_id, revision)
    manifest = await asyncio.to_thread(state.catalog.manifest, model_id, resolved)
    jobs = [j.model_dump() for j in state.jobs.active_for(model_id)]
    return {**record.view(), "revision": resolved, "manifest": manifest.model_dump(), "jobs": jobs}


@admin_router.post("/models/{model_id:path}/download", status_code=202)
async def download(model_id: str, state: StateDep, body: DownloadRequest | None = None) -> JSONResponse:
    validate_model_id(model_id)
    body = body or DownloadRequest()
    if body.revision is not None:
        validate_revision(body.revision)
    params = {"allow_patterns": body.allow_patterns, "ignore_patterns": body.ignore_patterns}
    job = state.jobs.submit("download", model_id, revision=body.revision, model_type=body.model_type,
                            params=params)
    return JSONResponse(job.model_dump(), status_code=202)


@admin_router.post("/models/{model_id:path}/import", status_code=202)
async def import_local(model_id: str, body: ImportRequest, state: StateDep) -> JSONResponse:
    validate_model_id(model_id)
    check_import_root(body.path, state.settings.import_roots)
    if is_gguf_path(body.path):  # a GGUF file is converted once into a folder by the job
        folder = await asyncio.to_thread(check_gguf, body.path)
        if body.model_type not in (None, "llm"):
            raise InvalidRequestError("A GGUF file converts to a causal language model: use type 'llm'.",
                                      param="model_type")
    else:
        folder = await asyncio.to_thread(check_folder, body.path)
    revision = validate_revision(body.revision) if body.revision else None
    if revision is None:  # name the revision now, so an interrupted import can be found and cleaned up
        revision = await asyncio.to_thread(
            lambda: gguf_fingerprint(folder) if folder.is_file() else folder_fingerprint(folder_files(folder)))
    job = state.jobs.submit("import", model_id, revision=revision, model_type=body.model_type,
                            params={"path": str(folder)}, resolved_revision=revision)
    return JSONResponse(job.model_dump(), status_code=202)


@admin_router.post("/models/{model_id:path}/export-onnx", status_code=202)
async def export_onnx(model_id: str, state: StateDep, body: OnnxExportRequest | None = None) -> JSONResponse:
    """Export a stored embedding or rerank model to ONNX (fp32 or int8) as a new revision, in a background job."""
    validate_model_id(model_id)
    body = body or OnnxExportRequest()
    await asyncio.to_thread(check_export_packages)
    source = await asyncio.to_thread(state.catalog.resolve, model_id, body.revision)
    manifest = await asyncio.to_thread(state.catalog.manifest, model_id, source)
    job = state.jobs.submit("onnx-export", model_id, revision=source, model_type=manifest.model_type or "embedding",
                            params={"quantize": body.quantize, "make_current": body.make_current},
                            resolved_revision=onnx_revision(source, body.quantize))
    return JSONResponse(job.model_dump(), status_code=202)


@admin_router.post("/models/{model_id:path}/export-gguf", status_code=202)
async def export_gguf(model_id: str, state: StateDep, body: GgufExportRequest | None = None) -> JSONResponse:
    """Convert a stored Hugging Face LLM to GGUF (llama.cpp's converter) as a new revision, in a background
    job; what makes it impossible (no converter, not an llm, already GGUF) is a 400 before any job starts."""
    validate_model_id(model_id)
    body = body or GgufExportRequest()
    source = await asyncio.to_thread(check_exportable, state.catalog, model_id, body.revision, body.outtype)
    job = state.jobs.submit("gguf-export", model_id, revision=source.revision, model_type="llm",
                            params={"outtype": body.outtype, "make_current": body.make_current},
                            resolved_revision=gguf_revision(source.revision, body.outtype))
    return JSONResponse(job.model_dump(), status_code=202)


@admin_router.put("/models/{model_id:path}/aliases/{alias}")
async def set_alias(model_id: str, alias: str, body: AliasRequest, state: StateDep) -> dict[str, Any]:
    validate_model_id(model_id)
    validate_alias(alias)
    record = await asyncio.to_thread(state.catalog.set_alias, model_id, alias, body.revision)
    return record.view()


@admin_router.delete("/models/{model_id:path}/revisions/{revision}")
async def delete_revision(model_id: str, revision: str, state: StateDep) -> dict[str, Any]:
    model_id, revision, _ = split_revision_path(model_id, revision)
    record = await asyncio.to_thread(state.catalog.delete_revision, model_id, revision)
    return {"id": model_id, "revision": revision, "deleted": True, "model": record.view() if record else None}


@admin_router.delete("/models/{model_id:path}")
async def delete_model(model_id: str, state: StateDep) -> dict[str, Any]:
    validate_model_id(model_id)
    objects = await asyncio.to_thread(state.catalog.delete_model, model_id)
    return {"id": model_id, "deleted": True, "objects": objects}


def check_import_root(path: str, roots: list[Path]) -> None:
    """403 unless ``path`` (symlinks resolved) lies inside one of ``roots``; no roots: any path."""
    if not roots:
        return
    try:
        real = Path(path).resolve()
    except (OSError, ValueError):  # a NUL byte, a loop of links
        raise InvalidRequestError(f"'{path}' is not a usable path.", param="path") from None
    if not any(real.is_relative_to(root.resolve()) for root in roots):
        raise PermissionDeniedError(
            "This registry imports only from its import folders (MODEL_REGISTRY_IMPORT_ROOTS); "
            f"'{path}' is outside them.", code="path_not_allowed")
