"""Server-sent events and client disconnects.

A streaming answer holds its engine slot until the stream ends however it ends: finished, failed,
or the client gone before the first byte (when Starlette never even starts the body iterator), so
the slot is released in the response's own ``__call__`` rather than inside the generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from typing import Any, TypeVar

from fastapi import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from common.errors import APIError, sse_error_event
from common.protocol import SSE_DONE, sse

log = logging.getLogger(__name__)
T = TypeVar("T")


class ClientClosedError(APIError):
    """The client went away before the answer was ready (nginx's 499; nobody reads it)."""

    status, type, code = 499, "invalid_request_error", "client_closed_request"


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes], held: AsyncExitStack) -> None:
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.held = held

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.held.aclose()


async def sse_events(payloads: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """Encode payloads as SSE, end with ``[DONE]``; a failure mid-stream becomes one error event."""
    try:
        async with contextlib.aclosing(payloads):  # type: ignore[type-var]
            async for payload in payloads:
                yield sse(payload)
    except APIError as exc:
        yield sse_error_event(exc.message, exc.type, exc.code)
    except Exception:
        log.exception("stream failed")
        yield sse_error_event("The server had an error while generating the answer.", "server_error",
                              "internal_error")
        return
    yield SSE_DONE


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run ``work`` but cancel it when the client disconnects first (non-streaming answers)."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.create_task(watch())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        raise ClientClosedError("The client closed the connection before the answer was ready.")
    finally:
        for pending in (task, watcher):
            pending.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
