"""Typed dependencies: routes reach the worker state only through these, never through globals."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from common.errors import InvalidRequestError, ModelNotFoundError
from common.service import state_getter
from model_service.engines.base import Engine
from model_service.worker import Worker

_ENDPOINT_NAMES = {"llm": "chat and text completions", "embedding": "embeddings",
                  "multimodal": "chat completions with images",
                  "transcription": "audio transcriptions and translations", "rerank": "rerank"}

# Set by the factory, so it is always there; the shared getter spares each request a thread hop.
get_worker = state_getter("worker", Worker, "worker")
WorkerDep = Annotated[Worker, Depends(get_worker)]


async def get_engine(worker: WorkerDep) -> Engine:
    """The loaded engine, or the 503 that says whether to wait; ``async``: no thread hop per request."""
    return worker.ready_engine()


EngineDep = Annotated[Engine, Depends(get_engine)]


def check_request(worker: Worker, model: str | None, needs: str | tuple[str, ...], endpoint: str) -> None:
    """404 for another model's name (an absent name means this one); 400 for the wrong endpoint.

    ``needs``: the model type(s) that serve the endpoint."""
    name = worker.settings.model_name
    if model is not None and model != name:
        raise ModelNotFoundError(f"The model '{model}' does not exist on this worker; it serves '{name}'.",
                                 param="model")
    kind = worker.settings.model_type
    if kind not in ((needs,) if isinstance(needs, str) else needs):
        raise InvalidRequestError(
            f"The model '{name}' is an {kind} model and does not support {endpoint}; "
            f"it serves {_ENDPOINT_NAMES.get(kind, kind)}.",
            param="model", code="unsupported_endpoint",
        )
