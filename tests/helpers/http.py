"""What tests send and check over HTTP: SSE bodies, OpenAI's error shape, raw ASGI requests and disconnects."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import httpx

JSON = {"content-type": "application/json"}
# The body limit the bad-input tests give every service: small, so "too large" is cheap to send.
MAX_BODY = 64 * 1024
# A chat long enough (200 words, 200 tokens asked) that a test can disconnect well before it ends.
LONG_CHAT_BODY = {"messages": [{"role": "user", "content": " ".join(["word"] * 200)}], "max_tokens": 200}


def sse_events(text: str) -> list[Any]:
    """Parse an SSE body into JSON payloads (``[DONE]`` kept as the string)."""
    out = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def assert_error(resp: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> dict:
    """The status, then exactly OpenAI's four error fields; ``code`` and ``param`` checked when given."""
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    if code is not None:
        assert err["code"] == code
    if param is not None:
        assert err["param"] == param
    return err


def assert_invalid_request(resp: httpx.Response, status: int, code: str | None = None, param: str | None = None,
                           type_: str = "invalid_request_error") -> dict[str, Any]:
    """:func:`assert_error`, stricter: a non-empty message, the expected type, and ``param`` exactly
    (``None`` included); ``code`` when given."""
    err = assert_error(resp, status, code)
    assert isinstance(err["message"], str) and err["message"]
    assert err["type"] == type_ and err["param"] == param
    return err


async def asgi_request(app: Any, method: str, raw_path: str, body: bytes = b"") -> httpx.Response:
    """One request with the path exactly as a server hands it to the app (no dot-segment clean-up,
    which HTTP clients do before sending)."""
    path, _, query = raw_path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": unquote(path), "raw_path": path.encode("latin-1"), "query_string": query.encode(),
             "root_path": "", "server": ("registry", 80), "client": ("127.0.0.1", 1234),
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    gone = asyncio.Event()
    gone.set()  # the client leaves as soon as the answer is in
    sent = await _exchange(app, scope, body, gone)
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return httpx.Response(start["status"], headers=start.get("headers", []), content=content)


async def call_and_disconnect(app: Any, body: dict[str, Any], disconnect_after_chunks: int | None,
                              disconnect_after_s: float = 0.0) -> list[dict[str, Any]]:
    """Send one POST to ``app``; disconnect after N body chunks, or after a delay for non-streaming.

    Raw ASGI, because httpx's ASGITransport buffers whole responses and cannot leave mid-stream."""
    payload = json.dumps(body).encode()
    gone = asyncio.Event()

    def on_send(sent: list[dict[str, Any]]) -> None:
        chunks = [m for m in sent if m["type"] == "http.response.body" and m.get("body")]
        if disconnect_after_chunks is not None and len(chunks) >= disconnect_after_chunks:
            gone.set()

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "root_path": "", "server": ("worker", 80), "client": ("127.0.0.1", 1234),
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]}
    if disconnect_after_chunks is None:
        asyncio.get_running_loop().call_later(disconnect_after_s, gone.set)
    return await asyncio.wait_for(_exchange(app, scope, payload, gone, on_send), timeout=10)


async def _exchange(app: Any, scope: dict[str, Any], body: bytes, gone: asyncio.Event,
                    on_send: Callable[[list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    """Run one request through ``app``: the body in one message, then a disconnect once ``gone`` is set.
    Returns every message the app sent; ``on_send`` sees them as they come."""
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if on_send is not None:
            on_send(sent)

    await app(scope, receive, send)
    return sent
