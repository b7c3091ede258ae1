"""``POST /v1/embeddings``: string, list or token-id input, ``encoding_format`` float/base64, ``dimensions``.

The answer is written by ``vectors.embeddings_body`` as bytes; ``response_model`` only documents it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from common.errors import InvalidRequestError
from common.protocol import EmbeddingRequest
from common.responses import EmbeddingResponse
from common.streaming import cancel_on_disconnect
from model_service.deps import EngineDep, WorkerDep, check_request
from model_service.token_inputs import texts_of_tokens
from model_service.vectors import check_matryoshka, embeddings_body

router = APIRouter()


@router.post("/v1/embeddings", response_model=EmbeddingResponse)
async def embeddings(req: EmbeddingRequest, request: Request, worker: WorkerDep,
                     engine: EngineDep) -> Response:
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
    body = embeddings_body(result.vectors, worker.settings.model_name, result.prompt_tokens,
                           encoding_format=req.encoding_format, dimensions=req.dimensions, native=native)
    return Response(content=body, media_type="application/json")
