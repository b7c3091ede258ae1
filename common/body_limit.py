"""Pure-ASGI middleware that bounds request bodies in size (413) and in time (408).

Size: it checks ``Content-Length`` up front and also counts the bytes of chunked bodies as they
arrive, so a client cannot get around the limit by leaving the header out.

Time: a body that stops arriving (no new chunk within ``body_timeout_s``) or that is still arriving
``body_deadline_s`` after the request started is cut off with a 408, so a slow or endless upload
cannot hold a connection and a task forever. The clocks run only while the app waits for the body:
once the last chunk is in, later ``receive`` calls (which wait for the client to disconnect) are
passed through untouched.

Written as raw ASGI (not ``BaseHTTPMiddleware``) so streaming responses pass through untouched.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.errors import PayloadTooLargeError, RequestTimeoutError, error_response

if TYPE_CHECKING:  # settings import this module's defaults
    from common.settings import ServiceSettings

# Defaults: a client that sends nothing for 30 s has stalled; five minutes is enough to upload the
# largest accepted body over a slow link.
DEFAULT_BODY_TIMEOUT_S = 30.0
DEFAULT_BODY_DEADLINE_S = 300.0


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body crosses the limit.

    An ``HTTPException`` so that frameworks reading the body pass it on as a 413 instead of
    wrapping it as a parse error.
    """

    def __init__(self, max_bytes: int) -> None:
        err = too_large(max_bytes)
        super().__init__(err.status, err.message, headers=err.headers)


class BodyTimeout(HTTPException):
    """Raised from ``receive`` when the body stalls or misses its deadline: a 408 that closes the
    connection (the rest of the body will never be read)."""

    def __init__(self, err: RequestTimeoutError) -> None:
        super().__init__(err.status, err.message, headers=err.headers)
        self.error = err


def too_large(max_bytes: int) -> PayloadTooLargeError:
    # The connection stays open: the server discards the rest of the body, so the client, which may
    # still be sending, reads the answer instead of a reset connection.
    return PayloadTooLargeError(f"Request body is larger than the limit of {max_bytes} bytes.")


def timed_out(idle: bool, seconds: float) -> RequestTimeoutError:
    """The connection is closed after the answer: a stalled or endless body must not keep it."""
    what = (f"no part of the request body arrived for {seconds:g} s" if idle
            else f"the request body did not arrive within {seconds:g} s")
    return RequestTimeoutError(f"Request timeout: {what}; the request was not processed.",
                               headers={"Connection": "close"})


class BodyLimitMiddleware:
    """``max_bytes``: largest body (0: no limit). ``body_timeout_s``: longest wait for the next chunk;
    ``body_deadline_s``: longest time from the start of the request to the end of its body (0: no limit)."""

    def __init__(self, app: ASGIApp, max_bytes: int, body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
                 body_deadline_s: float = DEFAULT_BODY_DEADLINE_S) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout_s = body_timeout_s
        self.body_deadline_s = body_deadline_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.max_bytes > 0 and self._declared_length(scope) > self.max_bytes:
            await error_response(too_large(self.max_bytes))(scope, receive, send)
            return
        deadline = time.monotonic() + self.body_deadline_s if self.body_deadline_s > 0 else None
        seen = 0
        body_done = False
        started = False

        async def bounded_receive() -> Message:
            nonlocal seen, body_done
            if body_done:
                return await receive()
            message = await self._next_message(receive, deadline)
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if 0 < self.max_bytes < seen:
                    raise BodyTooLarge(self.max_bytes)
                body_done = not message.get("more_body", False)
            else:  # a disconnect: nothing more will come
                body_done = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await error_response(too_large(self.max_bytes))(scope, receive, send)
        except BodyTimeout as exc:
            if not started:
                await error_response(exc.error)(scope, receive, send)

    async def _next_message(self, receive: Receive, deadline: float | None) -> Message:
        """The next message, or :class:`BodyTimeout` when it does not come in time."""
        wait = self.body_timeout_s if self.body_timeout_s > 0 else None
        idle = True
        if deadline is not None:
            left = deadline - time.monotonic()
            if wait is None or left < wait:
                wait, idle = max(left, 0.0), False
        if wait is None:
            return await receive()
        try:
            async with asyncio.timeout(wait):
                return await receive()
        except TimeoutError:
            limit = self.body_timeout_s if idle else self.body_deadline_s
            raise BodyTimeout(timed_out(idle, limit)) from None

    @staticmethod
    def _declared_length(scope: Scope) -> int:
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return 0
        return 0


def install_body_limits(app: Starlette, settings: ServiceSettings) -> None:
    """The one way every service adds this middleware: size limit, idle timeout and deadline from its
    settings (``*_MAX_BODY_BYTES``, ``*_BODY_TIMEOUT_S``, ``*_BODY_DEADLINE_S``)."""
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes,
                       body_timeout_s=settings.body_timeout_s, body_deadline_s=settings.body_deadline_s)
