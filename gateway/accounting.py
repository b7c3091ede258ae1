"""The last step of a proxied request: what it cost, and where that is recorded.

An :class:`Exchange` follows one request from arrival to its last byte and is finished exactly once,
however the request ended (answered, refused, failed, client gone): the metrics, the key's token
charge and the usage-log line all come from :meth:`Exchange.finish`, and every request line of the
usage log is built by :func:`usage_line`.

Token usage and time to first token are read off the bytes the proxy passes on. Non-streamed
answers carry ``usage`` at the end of a JSON body; only that object is decoded (:func:`usage_in`),
the body around it (choices, embedding vectors) is never parsed. Streamed answers are watched event
by event by :class:`StreamTap`: the events before the first content are decoded to find it (one or
two small ones), and after that only an event with a non-null ``usage`` is.

A client that streams without ``stream_options.include_usage`` still has its usage counted: the proxy
asks the upstream for it (:mod:`gateway.request`), and the tap takes it out again, both the final
usage-only chunk and the ``"usage":null`` that OpenAI's wire shape puts on every other chunk when
usage is asked for (our workers and vLLM alike), so the client gets what a normal stream would have
sent, byte for byte.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from common.auth import Principal, principal_of
from common.errors import APIError
from gateway.deps import GatewayState
from gateway.limits import UNLIMITED, Grant, RateLimitError
from gateway.metrics import NO_MODEL
from gateway.request import ProxyRequest, prompt_of
from gateway.routing import Endpoint
from gateway.usage import utc_iso

# The JSON OpenAI-compatible servers append to each chunk when asked for usage (ours and vLLM's
# spelling, with or without spaces); only a trailing one is removed.
_USAGE_NULL_TAIL = re.compile(rb',\s*"usage"\s*:\s*null\s*}\s*$')
_EVENT_END = re.compile(rb"\r?\n\r?\n")
# The same, as our workers end every chunk's event when asked for usage.
_NULL_TAIL_EVENT = b',"usage":null}\n\n'
_USAGE_KEY = re.compile(rb'"usage"\s*:\s*')
_DECODER = json.JSONDecoder()
# Bytes kept from the end of an answer too large to hold, to find its usage in.
TAIL_BYTES = 8192


@dataclass(frozen=True)
class TokenCount:
    """The token counts an upstream reported, as far as they are whole numbers (the wire ``Usage``,
    read leniently: another server's odd field is not worth failing an answer for)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None

    @classmethod
    def parse(cls, value: object) -> TokenCount | None:
        if not isinstance(value, dict):
            return None
        prompt, completion, total = (_count(value.get(k)) for k in ("prompt_tokens", "completion_tokens",
                                                                     "total_tokens"))
        if total is None and prompt is not None:
            total = prompt + (completion or 0)
        return cls(prompt, completion, total)


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def usage_in(body: bytes) -> TokenCount | None:
    """The last ``"usage": {...}`` object of a JSON body, decoded on its own.

    Text inside the answer cannot fake it: a quote in a string value is escaped, so ``"usage":``
    followed by ``{`` only occurs as a key.
    """
    end = len(body)
    while (at := body.rfind(b'"usage"', max(0, len(body) - TAIL_BYTES), end)) >= 0:
        found = _USAGE_KEY.match(body, at)
        if found is not None and body[found.end():found.end() + 1] == b"{":
            try:
                value, _ = _DECODER.raw_decode(body[found.end():].decode("utf-8", "replace"))
            except ValueError:
                return None
            return TokenCount.parse(value)
        end = at
    return None


class StreamTap:
    """Watches (and, with ``strip_usage``, edits) an SSE stream chunk by chunk.

    ``feed`` returns the bytes to send on: the chunk unchanged when nothing is stripped; otherwise
    whole events only, with the usage the client did not ask for taken out. ``close`` returns what is
    left over (an unfinished last event, as it came).
    """

    def __init__(self, *, strip_usage: bool, keep_text: bool = False) -> None:
        self.strip_usage = strip_usage
        self.keep_text = keep_text
        self.usage: TokenCount | None = None
        self.first_content_at: float | None = None  # perf_counter() of the first content event
        self.content_events = 0
        self.text: list[str] = []
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._pending + chunk if self._pending else chunk
        cut = _after_last_event(data)
        complete, self._pending = data[:cut], data[cut:]
        sent = self._complete(complete) if complete else b""
        return sent if self.strip_usage else chunk

    def _complete(self, block: bytes) -> bytes:
        """Whole events: one pass of C-level byte operations once the first content was seen (the
        usual case for every later chunk), else event by event."""
        if self.first_content_at is not None and not self.keep_text and b"\r" not in block:
            quick = block.replace(_NULL_TAIL_EVENT, b"}\n\n") if self.strip_usage else block
            if quick.count(b'"usage"') == quick.count(b'"usage":null'):  # no usage worth reading here
                self.content_events += block.count(b"\n\n")
                return quick
        return b"".join([self._event(event) for event in _events(block)])

    def close(self) -> bytes:
        rest, self._pending = self._pending, b""
        if rest.strip():
            kept = self._event(rest)
            return kept if self.strip_usage else b""
        return rest if self.strip_usage else b""

    def _event(self, event: bytes) -> bytes:
        """Look at one event; answer the bytes to send on for it (used only when stripping)."""
        data = _data_of(event)
        if data is None or data == b"[DONE]":
            return event
        null_tail = _USAGE_NULL_TAIL.search(data, max(0, len(data) - 40))
        if self.first_content_at is not None and not self.keep_text and (
                null_tail is not None or b'"usage"' not in data):
            self.content_events += 1  # the cheap path: every event after the first content
            return self._without_usage_null(event, data, null_tail)
        try:
            payload = json.loads(data)
        except ValueError:
            return event
        if not isinstance(payload, dict):
            return event
        if (usage := TokenCount.parse(payload.get("usage"))) is not None:
            self.usage = usage
            if self.strip_usage and not payload.get("choices"):
                return b""
        text = _content_of(payload)
        if text:
            self.content_events += 1
            if self.first_content_at is None:
                self.first_content_at = time.perf_counter()
            if self.keep_text:
                self.text.append(text)
        return self._without_usage_null(event, data, null_tail)

    def _without_usage_null(self, event: bytes, data: bytes, null_tail: re.Match[bytes] | None) -> bytes:
        if not self.strip_usage or null_tail is None:
            return event
        start = event.find(data)
        if start < 0:
            return event
        return event[:start] + data[:null_tail.start()] + b"}" + event[start + len(data):]


def _after_last_event(data: bytes) -> int:
    """Where the last complete event of ``data`` ends (0: none is complete yet)."""
    if b"\r" not in data:
        return data.rfind(b"\n\n") + 2 if b"\n\n" in data else 0
    end = 0
    for end_match in _EVENT_END.finditer(data):
        end = end_match.end()
    return end


def _events(block: bytes) -> list[bytes]:
    """A block of whole events split into events, each with its own blank-line ending."""
    if b"\r" not in block:
        return [part + b"\n\n" for part in block.split(b"\n\n")[:-1]]
    events, start = [], 0
    for match in _EVENT_END.finditer(block):
        events.append(block[start:match.end()])
        start = match.end()
    return events


def _data_of(event: bytes) -> bytes | None:
    """The ``data:`` of one SSE event (its lines joined, as the SSE spec joins them), or None."""
    if event.startswith(b"data: "):
        data = event[6:].rstrip(b"\r\n")
        if b"\n" not in data:  # the usual one-line event
            return data
    lines = [line[5:].removeprefix(b" ") for line in event.splitlines() if line.startswith(b"data:")]
    if not lines:
        return None
    return lines[0] if len(lines) == 1 else b"\n".join(lines)


def _content_of(payload: dict[str, Any]) -> str:
    """The text an OpenAI chunk carries: chat deltas (content, reasoning, tool calls) or completion text."""
    parts: list[str] = []
    for choice in payload.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        if isinstance(delta, dict):
            for key in ("content", "reasoning_content"):
                if isinstance(value := delta.get(key), str) and value:
                    parts.append(value)
            if delta.get("tool_calls"):
                parts.append(json.dumps(delta["tool_calls"]))
        elif isinstance(value := choice.get("text"), str) and value:
            parts.append(value)
    return "".join(parts)


def answer_text(body: bytes) -> str | None:
    """The generated text of a non-streamed chat/completion answer (only for content logging)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    parts = []
    for choice in payload.get("choices") or ():
        if isinstance(choice, dict):
            message = choice.get("message")
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                parts.append(message["content"])
            elif isinstance(choice.get("text"), str):
                parts.append(choice["text"])
    return "\n".join(parts) if parts else None


@dataclass
class Exchange:
    """One proxied request as the usage log, the metrics and the limits see it."""

    state: GatewayState
    endpoint: Endpoint  # as called (a chat with images keeps the chat path)
    principal: Principal
    request_id: str
    client_ip: str | None
    started: float = field(default_factory=time.perf_counter)
    wall: float = field(default_factory=time.time)
    request: ProxyRequest | None = None  # once the body is read and the model resolved
    grant: Grant = UNLIMITED

    @classmethod
    def begin(cls, state: GatewayState, request: Request, endpoint: Endpoint) -> Exchange:
        return cls(state, endpoint, principal_of(request), request.headers.get("x-request-id") or uuid.uuid4().hex,
                   request.client.host if request.client else None)

    @property
    def label(self) -> str:
        return self.request.label if self.request is not None else NO_MODEL

    def refused(self, exc: APIError) -> None:
        """Account for a request answered with an error before any upstream answer was relayed."""
        exc.headers.setdefault("x-request-id", self.request_id)
        for name, value in self.state.limits.headers(self.principal).items():
            exc.headers.setdefault(name, value)
        if isinstance(exc, RateLimitError):
            self.state.metrics.child(self.state.metrics.rate_limited, self.label).inc()
        self.finish(exc.status, error=exc.code or exc.type)

    def finish(self, status: int, *, replica: str | None = None, usage: TokenCount | None = None,
               first_content_at: float | None = None, error: str | None = None, completion: str | None = None,
               estimated_tokens: int = 0) -> None:
        state, now, label = self.state, time.perf_counter(), self.label
        state.metrics.observe(label, self.endpoint.path, status, now - self.started)
        if replica is not None:
            state.metrics.recent.record(replica, now - self.started)
        ttft = first_content_at - self.started if first_content_at is not None else None
        if ttft is not None:
            state.metrics.child(state.metrics.ttft, label).observe(ttft)
        if usage is not None:
            state.metrics.count_tokens(label, usage.prompt_tokens, usage.completion_tokens)
        used = usage.total_tokens if usage is not None and usage.total_tokens is not None else estimated_tokens
        self.grant.charge(used)
        if not state.usage.enabled:
            return
        asked = self.request
        entry = usage_line(
            wall=self.wall, request_id=self.request_id, key_id=self.principal.key_id,
            model=asked.model if asked is not None else None, replica=replica, endpoint=self.endpoint.path,
            status=status, stream=asked is not None and asked.stream, tokens=usage,
            latency_ms=round((now - self.started) * 1000, 2),
            ttft_ms=round(ttft * 1000, 2) if ttft is not None else None, client_ip=self.client_ip, error=error,
            caller=caller_fields(asked.payload) if asked is not None else None)
        if state.usage.content:
            entry["prompt"] = prompt_of(asked.payload) if asked is not None else None
            entry["completion"] = completion
        state.usage.write(entry)


def usage_line(*, request_id: str | None, key_id: str | None, endpoint: str, status: int, client_ip: str | None,
               wall: float | None = None, model: str | None = None, replica: str | None = None,
               stream: bool = False, tokens: TokenCount | None = None, latency_ms: float | None = None,
               ttft_ms: float | None = None, error: str | None = None,
               caller: dict[str, Any] | None = None) -> dict[str, Any]:
    """One request's line of the usage log (the only place one is built; ``error`` only when there is one,
    ``caller``'s fields (:func:`caller_fields`) only when the client sent them)."""
    entry: dict[str, Any] = {
        "time": utc_iso(time.time() if wall is None else wall), "request_id": request_id, "key_id": key_id,
        "model": model, "replica": replica, "endpoint": endpoint, "status": status, "stream": stream,
        "prompt_tokens": tokens.prompt_tokens if tokens else None,
        "completion_tokens": tokens.completion_tokens if tokens else None,
        "total_tokens": tokens.total_tokens if tokens else None,
        "latency_ms": latency_ms, "ttft_ms": ttft_ms, "client_ip": client_ip,
    }
    if error is not None:
        entry["error"] = error
    entry.update(caller or {})
    return entry


# Body fields OpenAI defines to tell the caller's own end users and requests apart: the usage log is
# where they go (the worker validates them; here only their shape is looked at).
CALLER_FIELDS = {"user": str, "safety_identifier": str, "metadata": dict}


def caller_fields(payload: dict[str, Any]) -> dict[str, Any]:
    """``user``, ``safety_identifier`` and ``metadata`` from an already parsed body, where sent with the
    right JSON type (a wrong one is the worker's 400 to give)."""
    return {name: value for name, kind in CALLER_FIELDS.items()
            if isinstance(value := payload.get(name), kind)}
