"""``POST /v1/chat/completions``: the chat template, n choices, SSE streaming in OpenAI's shapes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, aclosing
from typing import Any

from fastapi import APIRouter, Request

from common.errors import InvalidRequestError
from common.metrics import started_at
from common.protocol import ChatCompletion, ChatCompletionRequest, ChatMessage, TextPart, Usage, new_id, now
from common.streaming import cancel_on_disconnect
from model_service.chunks import ChatChunks, chat_completion
from model_service.deps import EngineDep, WorkerDep, check_request
from model_service.engines.base import ChatPrompt, Engine
from model_service.generation import ChoiceEvent, collect, merge, run_choice, sampling_params
from model_service.images import ImageLimits, load_images
from model_service.streaming import event_stream
from model_service.worker import Worker

router = APIRouter()


def _messages(req: ChatCompletionRequest, parts: bool = False) -> list[dict[str, Any]]:
    """Plain role/content dicts for the chat template (``developer`` is the newer name of ``system``).

    ``parts``: keep list contents as ``{"type": "text"|"image"}`` parts, the shape processors'
    chat templates expect (images themselves travel separately, in order)."""
    return [{"role": "system" if m.role == "developer" else m.role, "content": _content(m, parts)}
            for m in req.messages]


def _content(message: ChatMessage, parts: bool) -> Any:
    if not parts:
        return message.text()
    if not isinstance(message.content, list):  # processors' templates expect parts everywhere
        return [{"type": "text", "text": message.content}] if message.content else []
    return [{"type": "text", "text": p.text} if isinstance(p, TextPart) else {"type": "image"}
            for p in message.content]


async def _prompt(engine: Engine, worker: Worker, req: ChatCompletionRequest) -> ChatPrompt:
    """Text models get the chat template; multimodal ones also the request's decoded, checked images."""
    if worker.settings.model_type != "multimodal":
        if req.has_images():
            raise InvalidRequestError(
                f"The model '{worker.settings.model_name}' does not accept images; send text content only.",
                param="messages", code="images_not_supported",
            )
        return ChatPrompt(engine.chat_prompt(_messages(req)))
    images = await load_images(req.messages, ImageLimits.of(worker.settings), worker.http)
    # Image preprocessing is CPU work: off the event loop.
    return await asyncio.to_thread(engine.chat_inputs, _messages(req, parts=True), images)


def _events(engine: Engine, worker: Worker, req: ChatCompletionRequest,
            prompt: ChatPrompt) -> AsyncIterator[ChoiceEvent]:
    info = engine.info()
    streams = [
        run_choice(engine, prompt.ids,
                   sampling_params(req, prompt_len=len(prompt.ids), max_model_len=info.max_model_len,
                                   default_max_tokens=worker.settings.default_max_tokens, choice=i,
                                   vocab_size=info.vocab_size),
                   req.stop_list(), i, prompt.media)
        for i in range(req.n)
    ]
    return merge(streams)


@router.post("/v1/chat/completions", response_model=ChatCompletion)
async def chat_completions(req: ChatCompletionRequest, request: Request, worker: WorkerDep,
                           engine: EngineDep) -> Any:
    check_request(worker, req.model, ("llm", "multimodal"), "chat completions")
    prompt = await _prompt(engine, worker, req)
    prompt_ids = prompt.ids
    events = _events(engine, worker, req, prompt)  # validates the token budget before any wait
    held = AsyncExitStack()
    await held.enter_async_context(worker.admission.slot())  # 429 at once when the queue is full
    worker.metrics.prompt_tokens.inc(len(prompt_ids))
    if req.stream:
        events = worker.metrics.first_token(events, started_at(request.state))
        return event_stream(_stream(worker, req, events, len(prompt_ids)), held)
    async with held:
        results = await cancel_on_disconnect(request, collect(events, req.n))
    worker.metrics.completion_tokens.inc(sum(r.completion_tokens for r in results))
    return chat_completion(worker.settings.model_name, results, len(prompt_ids), bool(req.logprobs))


async def _stream(worker: Worker, req: ChatCompletionRequest, events: AsyncIterator[ChoiceEvent],
                  prompt_tokens: int) -> AsyncIterator[dict[str, Any]]:
    chunks = ChatChunks(new_id("chatcmpl"), now(), worker.settings.model_name, req.include_usage(),
                        bool(req.logprobs))
    for i in range(req.n):
        yield chunks.role(i)
    tokens = [0] * req.n
    try:
        async with aclosing(events):
            async for ev in events:
                tokens[ev.index] = ev.completion_tokens
                if ev.text or ev.logprobs:
                    yield chunks.content(ev.index, ev.text, ev.logprobs)
                if ev.finish_reason:
                    yield chunks.finish(ev.index, ev.finish_reason)
    finally:
        worker.metrics.completion_tokens.inc(sum(tokens))
    if chunks.include_usage:
        yield chunks.usage(Usage.of(prompt_tokens, sum(tokens)))
