"""OpenAI's exact response and stream-chunk shapes, built from choice events.

Stream chunks are plain dicts because OpenAI's deltas leave keys out rather than sending nulls
(``{"content": "x"}``, then ``{}`` on the last chunk) and ``usage`` appears only when asked for.
"""

from __future__ import annotations

from typing import Any

from common.responses import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChoiceLogprobs,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    TopLogprob,
    Usage,
)
from common.responses import TokenLogprob as WireLogprob
from model_service.engines.base import SampledToken
from model_service.generation import ChoiceResult
from model_service.tools import OutputPlan, tool_calls


def _bytes(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def chat_logprobs(items: list[SampledToken]) -> ChoiceLogprobs:
    return ChoiceLogprobs(content=[
        WireLogprob(token=it.token, logprob=it.logprob, bytes=_bytes(it.token),
                    top_logprobs=[TopLogprob(token=t, logprob=lp, bytes=_bytes(t)) for t, lp in it.top])
        for it in items
    ])


def completion_logprobs(items: list[SampledToken], offset: int = 0) -> CompletionLogprobs:
    offsets, pos = [], offset
    for it in items:
        offsets.append(pos)
        pos += len(it.token)
    return CompletionLogprobs(
        tokens=[it.token for it in items],
        token_logprobs=[it.logprob for it in items],
        top_logprobs=[dict(it.top) for it in items],
        text_offset=offsets,
    )


class ChatChunks:
    """Builds every chunk of one chat stream; all of them share one id and ``created``."""

    def __init__(self, id_: str, created: int, model: str, include_usage: bool, want_logprobs: bool) -> None:
        self.base = {"id": id_, "object": "chat.completion.chunk", "created": created, "model": model,
                     "system_fingerprint": None}
        self.include_usage = include_usage
        self.want_logprobs = want_logprobs

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        out = {**self.base, "choices": choices}
        if self.include_usage:
            out["usage"] = None
        return out

    def role(self, index: int) -> dict[str, Any]:
        return self._chunk([{"index": index, "delta": {"role": "assistant", "content": ""},
                             "logprobs": None, "finish_reason": None}])

    def content(self, index: int, text: str, logprobs: list[SampledToken]) -> dict[str, Any]:
        lp = chat_logprobs(logprobs).model_dump() if self.want_logprobs and logprobs else None
        return self._chunk([{"index": index, "delta": {"content": text}, "logprobs": lp, "finish_reason": None}])

    def delta(self, index: int, delta: dict[str, Any]) -> dict[str, Any]:
        """Any other delta (``model_service.tool_stream``'s content or tool-call pieces)."""
        return self._chunk([{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}])

    def finish(self, index: int, reason: str) -> dict[str, Any]:
        return self._chunk([{"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}])

    def usage(self, usage: Usage) -> dict[str, Any]:
        return {**self.base, "choices": [], "usage": usage.model_dump()}


class CompletionChunks:
    def __init__(self, id_: str, created: int, model: str, include_usage: bool, want_logprobs: bool) -> None:
        self.base = {"id": id_, "object": "text_completion", "created": created, "model": model,
                     "system_fingerprint": None}
        self.include_usage = include_usage
        self.want_logprobs = want_logprobs

    def text(self, index: int, text: str, logprobs: list[SampledToken] | None = None,
             finish_reason: str | None = None) -> dict[str, Any]:
        lp = completion_logprobs(logprobs).model_dump() if self.want_logprobs and logprobs else None
        out = {**self.base, "choices": [{"index": index, "text": text, "logprobs": lp,
                                         "finish_reason": finish_reason}]}
        if self.include_usage:
            out["usage"] = None
        return out

    def usage(self, usage: Usage) -> dict[str, Any]:
        return {**self.base, "choices": [], "usage": usage.model_dump()}


def chat_completion(model: str, results: list[ChoiceResult], prompt_tokens: int, want_logprobs: bool,
                    plan: OutputPlan | None = None) -> ChatCompletion:
    """The whole answer; with tools, text that makes calls becomes ``tool_calls`` (finish ``tool_calls``)."""
    choices = []
    for r in results:
        content, calls = tool_calls(plan or OutputPlan(), r.text)
        finish = "tool_calls" if calls and r.finish_reason == "stop" else r.finish_reason
        choices.append(ChatChoice(index=r.index, message=AssistantMessage(content=content, tool_calls=calls or None),
                                  finish_reason=finish, logprobs=chat_logprobs(r.logprobs) if want_logprobs else None))
    completion = sum(r.completion_tokens for r in results)
    return ChatCompletion(model=model, choices=choices, usage=Usage.of(prompt_tokens, completion))


def completion(model: str, results: list[ChoiceResult], prefixes: list[str], prompt_tokens: int,
               want_logprobs: bool) -> Completion:
    """``prefixes[i]`` is the echoed prompt of choice ``i`` (empty without ``echo``)."""
    choices = [
        CompletionChoice(index=r.index, text=prefixes[r.index] + r.text, finish_reason=r.finish_reason,
                         logprobs=completion_logprobs(r.logprobs, len(prefixes[r.index]))
                         if want_logprobs else None)
        for r in results
    ]
    completion_tokens = sum(r.completion_tokens for r in results)
    return Completion(model=model, choices=choices, usage=Usage.of(prompt_tokens, completion_tokens))
