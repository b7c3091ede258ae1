"""Step four of a proxied request: pass the opened upstream answer back, then account for it.

:func:`respond` relays an :class:`~gateway.send.Opened` upstream answer, watching it for usage and
the first content on the way (:class:`~gateway.accounting.StreamTap`), keeps the total upstream
deadline while it streams, and finishes the :class:`~gateway.accounting.Exchange` when the response
closes, however it closed. Past the first byte there is no failover: a failure ends an SSE stream
with one ``data: {"error": ...}`` event, and breaks any other answer's connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import httpx

from common.errors import sse_error_event
from common.streaming import ClosingResponse, ClosingStreamingResponse
from gateway.accounting import TAIL_BYTES, Exchange, StreamTap, answer_text, usage_in
from gateway.send import Opened

log = logging.getLogger(__name__)

# Response headers passed back besides the ones the gateway sets itself.
# cache-control and x-accel-buffering keep proxies (nginx) from buffering a stream of Server-Sent Events.
FORWARD_RESPONSE_HEADERS = ("content-type", "retry-after", "cache-control", "x-accel-buffering")


def respond(exchange: Exchange, opened: Opened) -> ClosingStreamingResponse | ClosingResponse:
    """The response that relays ``opened`` and finishes ``exchange`` when it closes."""
    relay = Relay(exchange, opened)
    upstream = opened.response
    headers = {k: v for k in FORWARD_RESPONSE_HEADERS if (v := upstream.headers.get(k)) is not None}
    headers.update(exchange.grant.headers)
    headers["x-request-id"] = exchange.request_id
    if opened.complete:
        return ClosingResponse(opened.first, status_code=upstream.status_code, headers=headers, on_close=relay.close)
    return ClosingStreamingResponse(relay.stream(), status_code=upstream.status_code, headers=headers,
                                    on_close=relay.close)


class Relay:
    """One opened upstream answer on its way to the client: its bytes, what they cost, and its end."""

    def __init__(self, exchange: Exchange, opened: Opened) -> None:
        assert exchange.request is not None  # an answer opened, so the request was read
        state = exchange.state
        self.exchange, self.opened = exchange, opened
        self.is_sse = opened.is_event_stream(exchange.request.stream)
        self.keep_text = state.usage.enabled and state.usage.content
        self.tap = StreamTap(strip_usage=exchange.request.strip_usage, keep_text=self.keep_text) if self.is_sse \
            else None
        self.tail = b""  # the end of a body that is not an event stream, to find its usage in
        self.finished = False
        self.gauge = state.metrics.child(state.metrics.in_flight, exchange.label)
        self.gauge.inc()

    async def stream(self) -> AsyncIterator[bytes]:
        """The upstream's bytes (an event stream as the tap passes it on), then a last error event
        for an event stream that failed or passed the deadline."""
        opened, tap, settings = self.opened, self.tap, self.exchange.state.settings
        try:
            chunk = opened.first
            while chunk is not None:
                if tap is not None:
                    chunk = tap.feed(chunk)
                else:
                    self.tail = (self.tail + chunk)[-TAIL_BYTES:]
                if chunk:
                    yield chunk
                chunk = await _next(opened.chunks, opened.deadline)
            if tap is not None and (rest := tap.close()):
                yield rest
        except httpx.HTTPError as exc:
            log.warning("upstream %s failed mid-stream: %r", opened.replica.url, exc)
            if not self.is_sse:
                raise  # the status is sent: breaking the connection is the only honest signal left
            yield sse_error_event(f"The model worker failed while streaming ({type(exc).__name__}).",
                                  code="upstream_error")
        except TimeoutError:
            log.warning("upstream %s passed the %.0fs deadline mid-stream", opened.replica.url,
                        settings.upstream_deadline_s)
            if not self.is_sse:
                raise
            yield sse_error_event("The answer took longer than this gateway allows "
                                  f"({settings.upstream_deadline_s:g}s) and was cut off.",
                                  code="upstream_timeout")
        self.finished = True

    async def close(self, sent: bool) -> None:
        """Close the upstream answer, free its replica, and account for the request."""
        opened, tap, upstream = self.opened, self.tap, self.opened.response
        self.finished = self.finished or sent
        await upstream.aclose()
        self.exchange.state.in_flight.release(opened.replica.url)
        self.gauge.dec()
        # 499 (nginx's "client closed request") when the client left before the end.
        status = upstream.status_code if self.finished else 499
        body = opened.first if opened.complete else self.tail
        completion = None
        if self.keep_text:
            completion = "".join(tap.text) if tap is not None else answer_text(body) if opened.complete else None
        self.exchange.finish(status, replica=opened.replica.url, usage=tap.usage if tap is not None else usage_in(body),
                             first_content_at=tap.first_content_at if tap is not None else None,
                             error=_error_code(body) if status >= 400 and opened.complete else None,
                             completion=completion, estimated_tokens=tap.content_events if tap is not None else 0)


async def _next(chunks: AsyncIterator[bytes], deadline: float | None) -> bytes | None:
    """The next upstream chunk (None at the end), within the total deadline when there is one."""
    if deadline is None:
        return await anext(chunks, None)
    async with asyncio.timeout_at(deadline):
        return await anext(chunks, None)


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
