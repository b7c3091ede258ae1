"""``POST /v1/embeddings``: string, list or token-id input, ``encoding_format`` float/base64, ``dimensions``."""

from __future__ import annotations

from fastapi import APIRouter, Request

from common.errors import InvalidRequestError
from common.protocol import EmbeddingData, EmbeddingRequest, EmbeddingResponse, Usage
from common.streaming import cancel_on_disconnect
from model_service.deps import EngineDep, WorkerDep, check_request
from model_service.token_inputs import texts_of_tokens
from model_service.vectors import check_matryoshka, shorten, to_base64

router = APIRouter()


@router.post("/v1/embeddings", response_model=EmbeddingResponse)
async def embeddings(req: EmbeddingRequest, request: Request, worker: WorkerDep,
                     engine: EngineDep) -> EmbeddingResponse:
    check_request(worker, req.model, "embedding", "embeddings")
    info = engine.info()
    native = info.embedding_dims or 0
    check_matryoshka(req.dimensions, native, info.matryoshka_dims, worker.settings.embedding_matryoshka)
    arrays = req.token_inputs()
    texts = req.inputs() if arrays is None else texts_of_tokens(arrays, worker.settings.embedding_token_ids, engine)
    if not texts or any(t == "" for t in texts):
        raise InvalidRequestError("'input' must not contain empty strings (or token arrays that decode to "
                                  "nothing).", param="input", code="invalid_value")
    async with worker.admission.slot():
        result = await cancel_on_disconnect(request, engine.embed(texts))
    worker.metrics.prompt_tokens.inc(result.prompt_tokens)
    data = []
    for i, vector in enumerate(result.vectors):
        vec = shorten(vector, req.dimensions, native)
        data.append(EmbeddingData(index=i, embedding=to_base64(vec) if req.encoding_format == "base64" else vec))
    return EmbeddingResponse(data=data, model=worker.settings.model_name, usage=Usage.of(result.prompt_tokens))
