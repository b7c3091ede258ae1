"""``POST /v1/completions``: raw prompts (one or a list), n, echo, streaming."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, aclosing
from typing import Any

from fastapi import APIRouter, Request

from common.metrics import started_at
from common.protocol import CompletionRequest, new_id, now
from common.responses import Completion, Usage
from common.streaming import cancel_on_disconnect
from model_service.chunks import CompletionChunks, completion
from model_service.deps import EngineDep, WorkerDep, check_request
from model_service.generation import ChoiceEvent, collect, merge, run_choice, sampling_params
from model_service.streaming import event_stream
from model_service.worker import Worker

router = APIRouter()


@router.post("/v1/completions", response_model=Completion)
async def completions(req: CompletionRequest, request: Request, worker: WorkerDep, engine: EngineDep) -> Any:
    check_request(worker, req.model, ("llm", "multimodal"), "text completions")
    prompts = req.prompts()
    prompt_ids = [engine.text_prompt(p) for p in prompts]
    info = engine.info()
    streams = []
    for p, ids in enumerate(prompt_ids):
        for i in range(req.n):
            params = sampling_params(req, prompt_len=len(ids), max_model_len=info.max_model_len,
                                     prompt_param="prompt", default_max_tokens=worker.settings.default_max_tokens,
                                     choice=i, vocab_size=info.vocab_size)
            streams.append(run_choice(engine, ids, params, req.stop_list(), p * req.n + i))
    # Choice k answers prompt k // n; with echo its text starts with that prompt.
    prefixes = [prompts[k // req.n] if req.echo else "" for k in range(len(streams))]
    prompt_tokens = sum(len(ids) for ids in prompt_ids)
    events = merge(streams)
    held = AsyncExitStack()
    await held.enter_async_context(worker.admission.slot())
    worker.metrics.prompt_tokens.inc(prompt_tokens)
    if req.stream:
        events = worker.metrics.first_token(events, started_at(request.state))
        return event_stream(_stream(worker, req, events, prefixes, prompt_tokens), held)
    async with held:
        results = await cancel_on_disconnect(request, collect(events, len(streams)))
    worker.metrics.completion_tokens.inc(sum(r.completion_tokens for r in results))
    return completion(worker.settings.model_name, results, prefixes, prompt_tokens, req.logprobs is not None)


async def _stream(worker: Worker, req: CompletionRequest, events: AsyncIterator[ChoiceEvent],
                  prefixes: list[str], prompt_tokens: int) -> AsyncIterator[dict[str, Any]]:
    chunks = CompletionChunks(new_id("cmpl"), now(), worker.settings.model_name, req.include_usage(),
                              req.logprobs is not None)
    for index, prefix in enumerate(prefixes):
        if prefix:
            yield chunks.text(index, prefix)
    tokens = [0] * len(prefixes)
    try:
        async with aclosing(events):
            async for ev in events:
                tokens[ev.index] = ev.completion_tokens
                if ev.text or ev.logprobs or ev.finish_reason:
                    yield chunks.text(ev.index, ev.text, ev.logprobs, ev.finish_reason)
    finally:
        worker.metrics.completion_tokens.inc(sum(tokens))
    if chunks.include_usage:
        yield chunks.usage(Usage.of(prompt_tokens, sum(tokens)))
