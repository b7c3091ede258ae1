"""Responses that run a close hook however they ended, and cancel-on-disconnect, for every service.

A service that holds something while it answers (a worker's engine slot, the gateway's upstream
response and its replica's in-flight count) must let go of it when the answer ends, however it
ends: sent in full, failed, or the client gone, even before the first byte, when Starlette never
starts the body iterator at all. A ``finally`` inside a generator misses that last case, so the hook
runs in the response's own ``__call__``, shielded from the cancellation that a disconnect brings.

A non-streamed answer sends nothing until it is ready, so nobody notices a client that gave up:
:func:`cancel_on_disconnect` watches for the disconnect while the work runs and cancels the work
(a generation, an upstream request) when the client leaves first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TypeVar

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from common.errors import APIError

T = TypeVar("T")
# Called once when the response ends: True when the whole answer was sent.
OnClose = Callable[[bool], Awaitable[None]]


class ClientClosedError(APIError):
    """The client went away before the answer started (nginx's 499; nobody reads it)."""

    status, type, code = 499, "invalid_request_error", "client_closed_request"


class ClosingStreamingResponse(StreamingResponse):
    """A streaming response whose ``on_close`` always runs, however the client or the content ended.

    Starlette cancels the body iterator when the client disconnects; the hook runs shielded, so
    closing an upstream response (which lets a worker see the disconnect and stop generating) or
    releasing a slot still happens. It gets ``False``: whether the whole stream went out is for the
    content iterator to know.
    """

    def __init__(self, content: AsyncIterator[bytes], *, on_close: OnClose, status_code: int = 200,
                 headers: Mapping[str, str] | None = None, media_type: str | None = None) -> None:
        super().__init__(content, status_code=status_code, headers=headers, media_type=media_type)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._on_close(False)


class ClosingResponse(Response):
    """A complete body sent as one plain response, with the same ``on_close`` hook.

    ``StreamingResponse`` runs a task group and a disconnect listener per request, which cost about
    as much as the whole proxying of a short JSON answer; a body already read needs none of that.
    The hook gets ``True`` when the body was sent.
    """

    def __init__(self, content: bytes, *, on_close: OnClose, status_code: int = 200,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(content, status_code=status_code, headers=headers)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sent = False
        try:
            await super().__call__(scope, receive, send)
            sent = True
        finally:
            with anyio.CancelScope(shield=True):
                await self._on_close(sent)


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` but cancel it, and raise :class:`ClientClosedError`, when the client leaves first.

    Call it once the request body is read: the next ASGI message can then only be the disconnect.
    Work that finishes anyway while being cancelled keeps its result (an upstream answer it opened
    must reach whoever releases it); work that fails on its way out is still the client's 499.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()  # not awaited: it ends at its next step, and waiting costs a loop turn
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task in done or (not task.cancelled() and task.exception() is None):
        return task.result()
    raise ClientClosedError("The client closed the connection before the answer started.")


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
