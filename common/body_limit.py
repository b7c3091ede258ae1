"""Pure-ASGI middleware that refuses request bodies over a size limit with a 413.

It checks ``Content-Length`` up front and also counts the bytes of chunked bodies as they arrive, so
a client cannot get around the limit by leaving the header out. Written as raw ASGI (not
``BaseHTTPMiddleware``) so streaming responses pass through untouched.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.errors import PayloadTooLargeError


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body crosses the limit.

    An ``HTTPException`` so that frameworks reading the body pass it on as a 413 instead of
    wrapping it as a parse error.
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"Request body is larger than the limit of {max_bytes} bytes.")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.max_bytes <= 0:
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._reject(send)
                    return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        err = PayloadTooLargeError(f"Request body is larger than the limit of {self.max_bytes} bytes.")
        payload = json.dumps(err.body()).encode()
        await send({
            "type": "http.response.start",
            "status": err.status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        })
        await send({"type": "http.response.body", "body": payload})
