"""Slow and endless request bodies against a real uvicorn server on loopback, from a raw socket.

A client that sends its headers and then stalls, or that trickles a chunked body forever, must get a
408 in OpenAI's error shape and a closed connection, and the handler must never run (so it never
holds a slot). The timeouts are settings here; nothing asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel

from common.body_limit import BodyLimitMiddleware
from common.errors import install_error_handlers
from tests.helpers.servers import serve

# Bounds for the client side of each test, far above the server's timeouts below.
READ_LIMIT_S = 20.0
IDLE_S = 0.3
DEADLINE_S = 1.5


class Body(BaseModel):
    model: str


def make_app(calls: list[str], **limits: Any) -> FastAPI:
    """A pydantic-body route (like the workers' and registries') and a raw-body one (like the gateway)."""
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, **{"max_bytes": 1 << 20, "body_timeout_s": IDLE_S,
                                               "body_deadline_s": DEADLINE_S, **limits})

    @app.post("/parsed")
    async def parsed(body: Body) -> dict[str, str]:
        calls.append("parsed")
        return {"model": body.model}

    @app.post("/raw")
    async def raw(request: Request) -> dict[str, int]:
        data = await request.body()
        calls.append("raw")
        return {"bytes": len(data)}

    return app


@asynccontextmanager
async def server(**limits: Any) -> AsyncIterator[tuple[int, list[str]]]:
    calls: list[str] = []
    async with serve(make_app(calls, **limits)) as url:
        yield int(url.rsplit(":", 1)[1]), calls


async def read_answer(reader: asyncio.StreamReader, closed: bool = True) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one HTTP/1.1 answer; with ``closed``, the server must then close."""
    async with asyncio.timeout(READ_LIMIT_S):
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        lines = head.split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:] if ": " in line)}
        body = await reader.readexactly(int(headers["content-length"]))
        if closed:
            try:
                rest = await reader.read()  # EOF: the server closed the connection
            except ConnectionResetError:  # closed while the client was still sending: a reset
                rest = b""
            assert rest == b""
    return status, headers, body


def assert_408(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert status == 408, body
    assert headers["content-type"] == "application/json"
    assert headers.get("connection") == "close"
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["code"] == "request_timeout"
    return err


def request_head(path: str, extra: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n{extra}\r\n").encode()


@pytest.mark.parametrize("path", ["/parsed", "/raw"])
async def test_headers_then_silence_is_408(path: str) -> None:
    async with server() as (port, calls):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request_head(path, "content-length: 100\r\n") + b'{"model": ')
            await writer.drain()
            err = assert_408(*await read_answer(reader))
        finally:
            writer.close()
        assert "no part of the request body arrived" in err["message"]
        assert calls == []


@pytest.mark.parametrize("path", ["/parsed", "/raw"])
async def test_chunked_body_that_never_ends_is_408(path: str) -> None:
    """Chunks keep coming, each within the idle timeout, so only the total deadline can stop it."""
    async with server() as (port, calls):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = asyncio.ensure_future(read_answer(reader))
        try:
            writer.write(request_head(path, "transfer-encoding: chunked\r\n"))
            for _ in range(int(READ_LIMIT_S / 0.05)):  # bounded: stops when the answer is in
                if answer.done():
                    break
                writer.write(b"1\r\n \r\n")
                try:
                    await writer.drain()
                except ConnectionError:
                    break  # the server closed its side after answering
                await asyncio.sleep(0.05)
            err = assert_408(*await answer)
        finally:
            answer.cancel()
            writer.close()
        assert "did not arrive within" in err["message"]
        assert calls == []


async def test_a_body_that_arrives_in_time_is_served_and_the_connection_kept() -> None:
    """Slow but steady chunks within both limits are fine; the same connection serves a second request."""
    async with server(body_deadline_s=30.0) as (port, calls):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(2):
                writer.write(request_head("/parsed", "transfer-encoding: chunked\r\n"))
                for piece in (b'{"model"', b': "a"}'):
                    writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    await writer.drain()
                    await asyncio.sleep(IDLE_S / 3)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                async with asyncio.timeout(READ_LIMIT_S):
                    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                    length = int(next(line.split(": ")[1] for line in head.split("\r\n")
                                      if line.lower().startswith("content-length")))
                    body = await reader.readexactly(length)
                assert head.startswith("HTTP/1.1 200"), head
                assert json.loads(body) == {"model": "a"}
        finally:
            writer.close()
        assert calls == ["parsed", "parsed"]


async def test_endless_chunked_body_over_the_size_limit_is_413() -> None:
    async with server(max_bytes=64, body_deadline_s=0) as (port, calls):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = asyncio.ensure_future(read_answer(reader, closed=False))
        try:
            writer.write(request_head("/raw", "transfer-encoding: chunked\r\n"))
            for _ in range(1000):
                if answer.done():
                    break
                writer.write(b"10\r\n" + b"x" * 16 + b"\r\n")
                try:
                    await writer.drain()
                except ConnectionError:
                    break
                await asyncio.sleep(0.01)
            status, _, body = await answer
        finally:
            answer.cancel()
            writer.close()
        assert status == 413
        assert json.loads(body)["error"]["code"] == "payload_too_large"
        assert calls == []


async def test_timeouts_off_wait_for_the_body() -> None:
    """0 turns both clocks off: a pause longer than the (default) idle timeout still gets served."""
    async with server(body_timeout_s=0, body_deadline_s=0) as (port, calls):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request_head("/parsed", "content-length: 13\r\n") + b'{"model"')
            await writer.drain()
            await asyncio.sleep(IDLE_S * 3)
            writer.write(b':"b"}')
            await writer.drain()
            async with asyncio.timeout(READ_LIMIT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        finally:
            writer.close()
        assert head.startswith(b"HTTP/1.1 200"), head
        assert calls == ["parsed"]


def service_apps(tmp_path: Any) -> dict[str, tuple[FastAPI, str]]:
    """Each service's own app with a short body timeout in its settings, and a POST route that reads a body."""
    from gateway.app import create_app as gateway_app
    from gateway.settings import GatewaySettings
    from model_registry.app import create_app as model_registry_app
    from model_registry.settings import ModelRegistrySettings
    from model_service.app import create_app as worker_app
    from model_service.settings import WorkerSettings
    from service_registry.app import create_app as service_registry_app
    from service_registry.settings import RegistrySettings

    limits = {"_env_file": None, "body_timeout_s": IDLE_S, "body_deadline_s": DEADLINE_S}
    return {
        "gateway": (gateway_app(GatewaySettings(**limits)), "/v1/chat/completions"),
        "service_registry": (service_registry_app(RegistrySettings(**limits)), "/register"),
        "model_registry": (model_registry_app(ModelRegistrySettings(local_root=tmp_path, **limits)),
                           "/models/org/name/download"),
        "worker": (worker_app(WorkerSettings(engine="fake", model_name="m", **limits)), "/v1/chat/completions"),
    }


async def test_every_service_applies_its_body_timeout_setting(tmp_path: Any) -> None:
    for name, (app, path) in service_apps(tmp_path).items():
        async with serve(app) as url:
            reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
            try:
                writer.write(request_head(path, "content-length: 100\r\n") + b"{")
                await writer.drain()
                async with asyncio.timeout(IDLE_S * 10):  # the default idle timeout is far longer
                    status, headers, body = await read_answer(reader)
            finally:
                writer.close()
            assert_408(status, headers, body), name
