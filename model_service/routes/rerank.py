"""``POST /v1/rerank`` (also ``/rerank`` and ``/v2/rerank``): Cohere's and Jina's shape, which most
rerank clients (LangChain, LlamaIndex, Dify, Open WebUI) send; results best first."""

from __future__ import annotations

from fastapi import APIRouter, Request

from common.errors import InvalidRequestError
from common.protocol import RerankRequest
from common.responses import RerankResponse, RerankResult, Usage
from common.streaming import cancel_on_disconnect
from model_service.deps import EngineDep, WorkerDep, check_request

router = APIRouter()


@router.post("/v1/rerank", response_model=RerankResponse)
@router.post("/v2/rerank", response_model=RerankResponse)
@router.post("/rerank", response_model=RerankResponse)
async def rerank(req: RerankRequest, request: Request, worker: WorkerDep, engine: EngineDep) -> RerankResponse:
    check_request(worker, req.model, "rerank", "rerank")
    texts = req.texts()
    if any(not t.strip() for t in texts):
        raise InvalidRequestError("'documents' must not contain empty texts.", param="documents",
                                  code="invalid_value")
    async with worker.admission.slot():
        scored = await cancel_on_disconnect(request, engine.rerank(req.query, texts))  # type: ignore[attr-defined]
    worker.metrics.prompt_tokens.inc(scored.prompt_tokens)
    order = sorted(range(len(texts)), key=lambda i: -scored.scores[i])[: req.top_n]
    results = [RerankResult(index=i, relevance_score=scored.scores[i],
                            document={"text": texts[i]} if req.return_documents else None) for i in order]
    return RerankResponse(model=worker.settings.model_name, results=results, usage=Usage.of(scored.prompt_tokens))
