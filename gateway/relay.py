"""The second half of a proxied request: pass the opened upstream answer back, then account for it.

An :class:`Exchange` follows one request from arrival to its last byte and is finished exactly once,
however the request ended (answered, refused, failed, client gone): the metrics, the key's token
charge and the usage-log line all come from :meth:`Exchange.finish`. :func:`respond` relays an
:class:`Opened` upstream answer, watching it for usage and the first content on the way, and keeps
the total upstream deadline while it streams.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from common.auth import Principal
from common.errors import sse_error_event
from gateway.accounting import TAIL_BYTES, StreamTap, Usage, answer_text, usage_in
from gateway.deps import GatewayState
from gateway.limits import UNLIMITED, Grant
from gateway.metrics import NO_MODEL
from gateway.responses import UpstreamAnswer, UpstreamStream
from gateway.routing import Endpoint
from gateway.upstreams import Replica
from gateway.usage import utc_iso

log = logging.getLogger(__name__)

# Response headers passed back besides the ones the gateway sets itself.
FORWARD_RESPONSE_HEADERS = ("content-type", "retry-after")


@dataclass
class Opened:
    """An upstream answer whose status and first chunk arrived: from here on there is no failover."""

    replica: Replica
    response: httpx.Response
    first: bytes
    chunks: AsyncIterator[bytes]
    # True when ``first`` is the whole body (a small non-streamed answer read before answering).
    complete: bool = False


@dataclass
class Exchange:
    """One request as the usage log, the metrics and the limits see it."""

    state: GatewayState
    endpoint: Endpoint
    principal: Principal
    request_id: str
    client_ip: str | None
    started: float = field(default_factory=time.perf_counter)
    wall: float = field(default_factory=time.time)
    label: str = NO_MODEL  # the metrics label: a model id the snapshot knows, else "-"
    model: str | None = None  # the model asked for (or resolved), for the log
    stream: bool = False
    strip_usage: bool = False  # the client did not ask for usage; the gateway did
    grant: Grant = UNLIMITED
    deadline: float | None = None  # loop time by which the whole upstream answer must have ended
    prompt: Any = None  # what the user sent, only when content logging is on

    def finish(self, status: int, *, replica: str | None = None, usage: Usage | None = None,
               first_content_at: float | None = None, error: str | None = None, completion: str | None = None,
               estimated_tokens: int = 0) -> None:
        state, now = self.state, time.perf_counter()
        state.metrics.observe(self.label, self.endpoint.path, status, now - self.started)
        ttft = first_content_at - self.started if first_content_at is not None else None
        if ttft is not None:
            state.metrics.child(state.metrics.ttft, self.label).observe(ttft)
        if usage is not None:
            state.metrics.count_tokens(self.label, usage.prompt_tokens, usage.completion_tokens)
        used = usage.total_tokens if usage is not None and usage.total_tokens is not None else estimated_tokens
        self.grant.charge(used)
        if not state.usage.enabled:
            return
        entry: dict[str, Any] = {
            "time": utc_iso(self.wall), "request_id": self.request_id, "key_id": self.principal.key_id,
            "model": self.model, "replica": replica, "endpoint": self.endpoint.path, "status": status,
            "stream": self.stream,
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
            "total_tokens": usage.total_tokens if usage else None,
            "latency_ms": round((now - self.started) * 1000, 2),
            "ttft_ms": round(ttft * 1000, 2) if ttft is not None else None,
            "client_ip": self.client_ip,
        }
        if error is not None:
            entry["error"] = error
        if state.usage.content:
            entry["prompt"] = self.prompt
            entry["completion"] = completion
        state.usage.write(entry)


def respond(exchange: Exchange, opened: Opened, wants_stream: bool) -> UpstreamStream | UpstreamAnswer:
    """The response that relays ``opened`` and finishes ``exchange`` when it closes."""
    state = exchange.state
    upstream = opened.response
    is_sse = is_event_stream(upstream, wants_stream)
    keep_text = state.usage.enabled and state.usage.content
    tap = StreamTap(strip_usage=exchange.strip_usage, keep_text=keep_text) if is_sse else None
    tail = b""
    finished = False

    async def relay() -> AsyncIterator[bytes]:
        nonlocal finished, tail
        try:
            chunk = opened.first
            while chunk is not None:
                if tap is not None:
                    chunk = tap.feed(chunk)
                else:
                    tail = (tail + chunk)[-TAIL_BYTES:]
                if chunk:
                    yield chunk
                chunk = await _next(opened.chunks, exchange.deadline)
            if tap is not None and (rest := tap.close()):
                yield rest
        except httpx.HTTPError as exc:
            log.warning("upstream %s failed mid-stream: %r", opened.replica.url, exc)
            if not is_sse:
                raise  # the status is sent: breaking the connection is the only honest signal left
            yield sse_error_event(f"The model worker failed while streaming ({type(exc).__name__}).",
                                  code="upstream_error")
        except TimeoutError:
            log.warning("upstream %s passed the %.0fs deadline mid-stream", opened.replica.url,
                        state.settings.upstream_deadline_s)
            if not is_sse:
                raise
            yield sse_error_event("The answer took longer than this gateway allows "
                                  f"({state.settings.upstream_deadline_s:g}s) and was cut off.",
                                  code="upstream_timeout")
        finished = True

    async def on_close(sent: bool) -> None:
        nonlocal finished
        finished = finished or sent
        await upstream.aclose()
        state.in_flight.release(opened.replica.url)
        gauge.dec()
        # 499 (nginx's "client closed request") when the client left before the end.
        status = upstream.status_code if finished else 499
        body = opened.first if opened.complete else tail
        usage = tap.usage if tap is not None else usage_in(body)
        completion = None
        if keep_text:
            completion = "".join(tap.text) if tap is not None else answer_text(body) if opened.complete else None
        exchange.finish(status, replica=opened.replica.url, usage=usage,
                        first_content_at=tap.first_content_at if tap is not None else None,
                        error=_error_code(body) if status >= 400 and opened.complete else None,
                        completion=completion, estimated_tokens=tap.content_events if tap is not None else 0)

    gauge = state.metrics.child(state.metrics.in_flight, exchange.label)
    gauge.inc()
    headers = {k: v for k in FORWARD_RESPONSE_HEADERS if (v := upstream.headers.get(k)) is not None}
    headers.update(exchange.grant.headers)
    headers["x-request-id"] = exchange.request_id
    if opened.complete:
        return UpstreamAnswer(opened.first, status_code=upstream.status_code, headers=headers, on_close=on_close)
    return UpstreamStream(relay(), status_code=upstream.status_code, headers=headers, on_close=on_close)


async def _next(chunks: AsyncIterator[bytes], deadline: float | None) -> bytes | None:
    """The next upstream chunk (None at the end), within the total deadline when there is one."""
    if deadline is None:
        return await anext(chunks, None)
    async with asyncio.timeout_at(deadline):
        return await anext(chunks, None)


def is_event_stream(response: httpx.Response, wants_stream: bool) -> bool:
    content_type = response.headers.get("content-type", "")
    return content_type.startswith("text/event-stream") or (wants_stream and not content_type)


def _error_code(body: bytes) -> str | None:
    """The ``code`` (else ``type``) of an upstream's OpenAI-shaped error answer, for the log."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    if not isinstance(error, dict):
        return None
    found = error.get("code") or error.get("type")
    return str(found) if found is not None else None
