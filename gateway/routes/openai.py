"""The OpenAI endpoints (and rerank): proxied POSTs and the union of the healthy workers' models."""

from __future__ import annotations

import time
from collections.abc import Mapping

from fastapi import APIRouter, Request
from starlette.responses import Response

from common.auth import principal_of
from common.errors import ModelNotFoundError
from common.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    RerankRequest,
    openapi_audio_body,
    openapi_json_body,
)
from common.records import CAPABILITIES
from common.responses import ModelCard, ModelList
from gateway.circuit import Circuit
from gateway.deps import StateDep
from gateway.proxy import forward
from gateway.routing import (
    CHAT,
    COMPLETIONS,
    DEFAULT_RULES,
    EMBEDDINGS,
    RERANK,
    TRANSCRIPTIONS,
    TRANSLATIONS,
    Rules,
    is_usable,
)
from gateway.upstreams import Snapshot

router = APIRouter(tags=["openai"])


@router.post("/v1/chat/completions", openapi_extra=openapi_json_body(ChatCompletionRequest))
async def chat_completions(request: Request, state: StateDep) -> Response:
    return await forward(state, request, CHAT, state.settings.default_chat_model)


@router.post("/v1/completions", openapi_extra=openapi_json_body(CompletionRequest))
async def completions(request: Request, state: StateDep) -> Response:
    return await forward(state, request, COMPLETIONS, state.settings.default_chat_model)


@router.post("/v1/embeddings", openapi_extra=openapi_json_body(EmbeddingRequest))
async def embeddings(request: Request, state: StateDep) -> Response:
    return await forward(state, request, EMBEDDINGS, state.settings.default_embedding_model)


@router.post("/v1/audio/transcriptions", openapi_extra=openapi_audio_body("transcribe"))
async def audio_transcriptions(request: Request, state: StateDep) -> Response:
    return await forward(state, request, TRANSCRIPTIONS, state.settings.default_transcription_model)


@router.post("/v1/audio/translations", openapi_extra=openapi_audio_body("translate"))
async def audio_translations(request: Request, state: StateDep) -> Response:
    return await forward(state, request, TRANSLATIONS, state.settings.default_transcription_model)


@router.post("/v1/rerank", openapi_extra=openapi_json_body(RerankRequest))
@router.post("/v2/rerank", openapi_extra=openapi_json_body(RerankRequest))
@router.post("/rerank", openapi_extra=openapi_json_body(RerankRequest))
async def rerank(request: Request, state: StateDep) -> Response:
    """Cohere / Jina rerank, routed to a ``rerank`` worker; every path goes upstream as ``/v1/rerank``."""
    return await forward(state, request, RERANK, state.settings.default_rerank_model)


@router.get("/v1/models")
async def list_models(request: Request, state: StateDep) -> ModelList:
    """The usable models; a key limited to some models sees only those."""
    listed = model_list(state.upstreams.snapshot, state.circuits.view(), time.monotonic(), state.rules)
    principal = principal_of(request)
    if principal.models is not None:
        listed.data = [card for card in listed.data if principal.allows_model(card.id)]
    return listed


@router.get("/v1/models/{model_id:path}", responses={404: {"description": "no such model (for this key)"}})
async def retrieve_model(model_id: str, request: Request, state: StateDep) -> ModelCard:
    """One card of ``/v1/models``, the same one; ids contain ``/``, hence the path converter. A model the
    key may not use is a 404 for it, as the list hides it, so a key learns nothing of other models."""
    principal = principal_of(request)
    if principal.allows_model(model_id):
        listed = model_list(state.upstreams.snapshot, state.circuits.view(), time.monotonic(), state.rules)
        for card in listed.data:
            if card.id == model_id:
                return card
    raise ModelNotFoundError(f"The model '{model_id}' does not exist or you do not have access to it.",
                             param="model")


def model_list(snapshot: Snapshot, circuits: Mapping[str, Circuit] | None = None, now: float = 0.0,
               rules: Rules = DEFAULT_RULES) -> ModelList:
    """One card per model id with at least one usable replica (healthy, circuit admitting, GPU fine).

    A model whose every replica is down or tripped is left out, so clients never pick a model that
    would only answer 503.
    """
    cards: dict[str, ModelCard] = {}
    for replica in snapshot.healthy():
        if replica.model is None or replica.model in cards or not is_usable(replica, circuits or {}, now, rules):
            continue
        type_ = replica.type or "llm"
        cards[replica.model] = ModelCard(id=replica.model, type=type_,
                                         capabilities=list(CAPABILITIES.get(type_, [])),
                                         max_model_len=replica.max_model_len)
    return ModelList(data=list(cards.values()))
