"""Read-only endpoints of the worker contract: health, model list, GPU stats (``/metrics`` is the
shared route of ``common/service.py``).

``/health`` is on its own router: it stays open when auth is on (health checks carry no key).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from common.errors import ModelNotFoundError
from common.gpu import collect_gpu_stats
from common.records import CAPABILITIES, GPUStats, WorkerHealth
from common.responses import ModelCard, ModelList
from model_service.deps import WorkerDep
from model_service.worker import Worker

router = APIRouter()
health_router = APIRouter()


@health_router.get("/health", response_model=WorkerHealth, responses={503: {"description": "loading or failed"}})
async def health(worker: WorkerDep) -> WorkerHealth:
    """200 only once the model is loaded and its engine can serve (a supervised engine server that is
    restarting makes it 503 again), so load balancers and the registry wait for it."""
    # Goes through the error table: OpenAI's shape, with Retry-After while loading.
    worker.ready_engine()
    return worker.health()


def model_card(worker: Worker) -> ModelCard:
    info = worker.info()
    return ModelCard(
        id=worker.settings.model_name,
        type=worker.settings.model_type,
        capabilities=list(CAPABILITIES.get(worker.settings.model_type, [])),
        max_model_len=info.max_model_len if info else worker.settings.max_model_len,
        engine=info.engine if info else None,
    )


@router.get("/v1/models", response_model=ModelList)
async def list_models(worker: WorkerDep) -> ModelList:
    return ModelList(data=[model_card(worker)])


@router.get("/v1/models/{model_id:path}", response_model=ModelCard,
            responses={404: {"description": "not the model this worker serves"}})
async def retrieve_model(model_id: str, worker: WorkerDep) -> ModelCard:
    """OpenAI's model retrieval; ids such as ``Qwen/Qwen2.5-0.5B-Instruct`` contain ``/``."""
    if model_id != worker.settings.model_name:
        raise ModelNotFoundError(f"The model '{model_id}' does not exist on this worker; it serves "
                                 f"'{worker.settings.model_name}'.", param="model")
    return model_card(worker)


@router.get("/gpu-stats", response_model=GPUStats)
async def gpu_stats() -> GPUStats:
    """NVML calls block, so they run in a thread; with no GPU the answer says so (available=false)."""
    return await asyncio.to_thread(collect_gpu_stats)
