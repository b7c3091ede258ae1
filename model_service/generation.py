"""From an OpenAI request to engine sequences and back: sampling params, stop strings, n choices.

Engines only produce token deltas; everything OpenAI-specific that is the same for every engine
(stop strings never shown, the context-length cap, several choices at once, usage) lives here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from common.errors import InvalidRequestError
from common.protocol import ChatCompletionRequest, CompletionRequest
from model_service.engines.base import SampledToken, SamplingParams, TextGenerator
from model_service.stops import StopMatcher

T = TypeVar("T")
_END = object()


@dataclass
class ChoiceEvent:
    """Text that is safe to show for one choice; ``completion_tokens`` is the running count."""

    index: int
    text: str
    finish_reason: str | None = None
    completion_tokens: int = 0
    logprobs: list[SampledToken] = field(default_factory=list)


@dataclass
class ChoiceResult:
    index: int
    text: str = ""
    finish_reason: str = "stop"
    completion_tokens: int = 0
    logprobs: list[SampledToken] = field(default_factory=list)


def sampling_params(
    req: ChatCompletionRequest | CompletionRequest, *, prompt_len: int, max_model_len: int | None,
    default_max_tokens: int, choice: int = 0, prompt_param: str = "messages", vocab_size: int | None = None,
) -> SamplingParams:
    """Resolve OpenAI defaults and cap the token budget by what is left of the context window;
    ``logit_bias`` keys must be ids of the model's vocabulary (``vocab_size``, where the engine knows it)."""
    bias = req.logit_biases()
    check_token_ids(set(bias), vocab_size, "logit_bias")
    limit = req.token_limit() if isinstance(req, ChatCompletionRequest) else req.max_tokens
    limit = limit or default_max_tokens
    if max_model_len is not None:
        room = max_model_len - prompt_len
        if room <= 0:
            raise InvalidRequestError(
                f"This model's maximum context length is {max_model_len} tokens, but the prompt has "
                f"{prompt_len} tokens. Please shorten the prompt.",
                param=prompt_param, code="context_length_exceeded",
            )
        limit = min(limit, room)
    if isinstance(req, ChatCompletionRequest):
        logprobs, top = bool(req.logprobs), req.top_logprobs or 0
    else:
        logprobs, top = req.logprobs is not None, req.logprobs or 0
    return SamplingParams(
        max_tokens=limit,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        # Several choices from one seed must differ from each other yet stay reproducible.
        seed=None if req.seed is None else req.seed + choice,
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        logprobs=logprobs,
        top_logprobs=top,
        top_k=max(req.top_k or 0, 0),
        min_p=req.min_p or 0.0,
        repetition_penalty=req.repetition_penalty or 1.0,
        logit_bias=bias,
    )


def check_token_ids(ids: list[int] | set[int], vocab_size: int | None, param: str) -> None:
    """Token ids name the model's own vocabulary: one outside it is a 400, never an index error later."""
    if vocab_size is None:
        return
    bad = sorted(i for i in ids if not 0 <= i < vocab_size)
    if bad:
        raise InvalidRequestError(
            f"Token id {bad[0]} in '{param}' is outside this model's vocabulary (0 to {vocab_size - 1}).",
            param=param, code="invalid_value")


async def run_choice(engine: TextGenerator, prompt_ids: list[int], params: SamplingParams, stops: list[str],
                     index: int, media: Any = None) -> AsyncIterator[ChoiceEvent]:
    """One sequence with stop strings applied; leaving early closes (and so cancels) the engine.

    ``media``: the prompt's ``ChatPrompt.media`` (a vision prompt's pixel values), passed through."""
    matcher = StopMatcher(stops)
    tokens = 0
    pending: list[SampledToken] = []
    async with aclosing(engine.generate(prompt_ids, params, media)) as deltas:
        async for delta in deltas:
            tokens += len(delta.token_ids)
            pending.extend(delta.logprobs)
            text = matcher.feed(delta.text)
            if matcher.stopped:
                yield ChoiceEvent(index, text, "stop", tokens, pending if text else [])
                return
            if delta.finish_reason:
                text += matcher.flush()
            if text or delta.finish_reason:
                yield ChoiceEvent(index, text, delta.finish_reason, tokens, pending)
                pending = []
            if delta.finish_reason:
                return
    yield ChoiceEvent(index, matcher.flush(), "stop", tokens, pending)


async def merge(streams: list[AsyncIterator[T]]) -> AsyncIterator[T]:
    """Interleave several async iterators as items arrive; closing the merge closes them all."""
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def pump(stream: AsyncIterator[T]) -> None:
        try:
            async with aclosing(stream):  # type: ignore[type-var]
                async for item in stream:
                    await queue.put(item)
            await queue.put(_END)
        except Exception as exc:  # handed to the consumer, which re-raises it
            await queue.put(exc)

    tasks = [asyncio.create_task(pump(s)) for s in streams]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is _END:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def collect(events: AsyncIterator[ChoiceEvent], count: int) -> list[ChoiceResult]:
    """Gather a whole answer for the non-streaming responses."""
    results = [ChoiceResult(index=i) for i in range(count)]
    async with aclosing(events):  # type: ignore[type-var]
        async for ev in events:
            res = results[ev.index]
            res.text += ev.text
            res.logprobs.extend(ev.logprobs)
            res.completion_tokens = ev.completion_tokens
            if ev.finish_reason:
                res.finish_reason = ev.finish_reason
    return results
