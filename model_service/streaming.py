"""Server-sent events for the worker's streamed answers.

A streaming answer holds its engine slot until the stream ends however it ends: finished, failed,
or the client gone before the first byte. :func:`event_stream` hands the slot to
:class:`common.streaming.ClosingStreamingResponse`, whose close hook runs in every one of those cases.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

from common.errors import APIError, sse_error_event
from common.protocol import SSE_DONE, sse
from common.streaming import ClosingStreamingResponse

log = logging.getLogger(__name__)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event_stream(payloads: AsyncIterator[dict[str, Any]], held: AsyncExitStack) -> ClosingStreamingResponse:
    """``payloads`` as an SSE response that closes ``held`` (the engine slot) when it ends."""

    async def release(_sent: bool) -> None:
        await held.aclose()

    return ClosingStreamingResponse(sse_events(payloads), on_close=release, headers=SSE_HEADERS,
                                    media_type="text/event-stream")


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
