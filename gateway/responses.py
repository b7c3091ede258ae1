"""The two responses the proxy answers with; both run an ``on_close`` hook however the send ended.

The hook (close the upstream response, release the replica's in-flight count, record metrics) gets
``True`` when the whole answer was sent, so a client that left shows up as a 499.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send


class UpstreamStream(StreamingResponse):
    """A streaming response that always runs ``on_close``, however the client or upstream ended.

    Starlette cancels the body iterator when the client disconnects; closing the upstream response
    in a shielded ``finally`` is what lets the worker see the disconnect and stop generating.
    """

    def __init__(self, content: AsyncIterator[bytes], *, status_code: int, headers: dict[str, str],
                 on_close: Callable[[bool], Awaitable[None]]) -> None:
        super().__init__(content, status_code=status_code, headers=headers)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._on_close(False)


class UpstreamAnswer(Response):
    """A small non-streamed upstream answer, already read, sent as one plain response.

    ``StreamingResponse`` runs a task group and a disconnect listener per request, which cost about
    as much as the whole proxying for a short JSON answer; the body is complete here, so none of
    that is needed. ``on_close`` runs as for :class:`UpstreamStream`.
    """

    def __init__(self, content: bytes, *, status_code: int, headers: dict[str, str],
                 on_close: Callable[[bool], Awaitable[None]]) -> None:
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
