"""``POST /v1/chat/completions``: the chat template, n choices, SSE streaming in OpenAI's shapes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, aclosing
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request

from common.errors import InvalidRequestError
from common.metrics import started_at
from common.protocol import ChatCompletionRequest, ChatMessage, TextPart, new_id, now
from common.responses import ChatCompletion, Usage
from common.streaming import cancel_on_disconnect
from model_service.chunks import ChatChunks, chat_completion
from model_service.deps import EngineDep, WorkerDep, check_request
from model_service.engines.base import ChatPrompt, Engine
from model_service.generation import ChoiceEvent, collect, merge, run_choice, sampling_params
from model_service.images import ImageLimits, load_images
from model_service.streaming import event_stream
from model_service.tool_stream import ToolStream
from model_service.tools import OutputPlan, chat_messages, plan_output
from model_service.worker import Worker

router = APIRouter()


def _parts(req: ChatCompletionRequest) -> list[dict[str, Any]]:
    """Messages for a processor's chat template: list contents as ``{"type": "text"|"image"}`` parts
    everywhere (images themselves travel separately, in order)."""
    return [{"role": "system" if m.role == "developer" else m.role, "content": _content(m)} for m in req.messages]


def _content(message: ChatMessage) -> Any:
    if not isinstance(message.content, list):
        return [{"type": "text", "text": message.content}] if message.content else []
    return [{"type": "text", "text": p.text} if isinstance(p, TextPart) else {"type": "image"}
            for p in message.content]


async def _prompt(engine: Engine, worker: Worker, req: ChatCompletionRequest, plan: OutputPlan) -> ChatPrompt:
    """Text models get the chat template (with the tools); multimodal ones also the request's
    decoded, checked images."""
    if worker.settings.model_type != "multimodal":
        if req.has_images():
            raise InvalidRequestError(
                f"The model '{worker.settings.model_name}' does not accept images; send text content only.",
                param="messages", code="images_not_supported",
            )
        messages = chat_messages(req, plan, engine.template_takes_tools())
        # Only engines whose template takes tools are given them: others keep the one-argument call.
        return ChatPrompt(engine.chat_prompt(messages, plan.tools) if plan.native else engine.chat_prompt(messages))
    images = await load_images(req.messages, ImageLimits.of(worker.settings), worker.http)
    # Image preprocessing is CPU work: off the event loop.
    return await asyncio.to_thread(engine.chat_inputs, _parts(req), images)


def _events(engine: Engine, worker: Worker, req: ChatCompletionRequest, prompt: ChatPrompt,
            plan: OutputPlan) -> AsyncIterator[ChoiceEvent]:
    info = engine.info()
    streams = [
        run_choice(engine, prompt.ids,
                   replace(sampling_params(req, prompt_len=len(prompt.ids), max_model_len=info.max_model_len,
                                           default_max_tokens=worker.settings.default_max_tokens, choice=i,
                                           vocab_size=info.vocab_size),
                           grammar=plan.grammar, json_schema=plan.json_schema),
                   req.stop_list(), i, prompt.media)
        for i in range(req.n)
    ]
    return merge(streams)


@router.post("/v1/chat/completions", response_model=ChatCompletion)
async def chat_completions(req: ChatCompletionRequest, request: Request, worker: WorkerDep,
                           engine: EngineDep) -> Any:
    check_request(worker, req.model, ("llm", "multimodal"), "chat completions")
    plan = plan_output(req, engine, worker.settings.model_name)
    prompt = await _prompt(engine, worker, req, plan)
    prompt_ids = prompt.ids
    events = _events(engine, worker, req, prompt, plan)  # checks the token budget before any wait
    held = AsyncExitStack()
    await held.enter_async_context(worker.admission.slot())  # 429 at once when the queue is full
    worker.metrics.prompt_tokens.inc(len(prompt_ids))
    if req.stream:
        events = worker.metrics.first_token(events, started_at(request.state))
        return event_stream(_stream(worker, req, events, len(prompt_ids), plan), held)
    async with held:
        results = await cancel_on_disconnect(request, collect(events, req.n))
    worker.metrics.completion_tokens.inc(sum(r.completion_tokens for r in results))
    return chat_completion(worker.settings.model_name, results, len(prompt_ids), bool(req.logprobs), plan)


async def _stream(worker: Worker, req: ChatCompletionRequest, events: AsyncIterator[ChoiceEvent],
                  prompt_tokens: int, plan: OutputPlan) -> AsyncIterator[dict[str, Any]]:
    chunks = ChatChunks(new_id("chatcmpl"), now(), worker.settings.model_name, req.include_usage(),
                        bool(req.logprobs))
    for i in range(req.n):
        yield chunks.role(i)
    tokens = [0] * req.n
    tools = [ToolStream(plan) for _ in range(req.n)] if plan.tools else None
    try:
        async with aclosing(events):
            async for ev in events:
                tokens[ev.index] = ev.completion_tokens
                if tools is None:
                    if ev.text or ev.logprobs:
                        yield chunks.content(ev.index, ev.text, ev.logprobs)
                    if ev.finish_reason:
                        yield chunks.finish(ev.index, ev.finish_reason)
                    continue
                stream = tools[ev.index]
                for delta in stream.feed(ev.text) + (stream.finish() if ev.finish_reason else []):
                    yield chunks.delta(ev.index, delta)
                if ev.finish_reason:
                    called = stream.called and ev.finish_reason == "stop"
                    yield chunks.finish(ev.index, "tool_calls" if called else ev.finish_reason)
    finally:
        worker.metrics.completion_tokens.inc(sum(tokens))
    if chunks.include_usage:
        yield chunks.usage(Usage.of(prompt_tokens, sum(tokens)))
