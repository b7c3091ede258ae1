"""``/jobs/{id}``: progress of a download or import job."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from model_registry.deps import StateDep

router = APIRouter()


@router.get("/jobs")
async def list_jobs(state: StateDep) -> dict[str, Any]:
    jobs = sorted(state.jobs.jobs.values(), key=lambda j: j.created_at, reverse=True)
    return {"object": "list", "data": [j.model_dump() for j in jobs]}


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, state: StateDep) -> dict[str, Any]:
    job = await asyncio.to_thread(state.jobs.get, job_id)
    return job.model_dump()
