"""A deliberately broken upstream on raw asyncio streams, so it can misbehave in ways a FastAPI app
would not (drop the connection, die mid-stream)."""

from __future__ import annotations

import asyncio
import json


class StubWorker:
    """A worker that says it is healthy but misbehaves on POST, by ``mode``.

    ``ok``: answers 200 JSON naming itself; ``echo``: answers with the path, body and headers it got;
    ``500``: answers 500; ``close``: drops the connection
    without a response; ``hang``: never answers; ``midstream``: starts a 200 SSE stream, sends one event, then dies.
    """

    def __init__(self, model: str, mode: str = "ok", model_type: str = "llm") -> None:
        self.model, self.mode, self.model_type = model, mode, model_type
        self.hits = 0
        self.url = ""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._stopping = asyncio.Event()

    async def __aenter__(self) -> StubWorker:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop listening and cut open connections, so later connects are refused."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            method, path, _ = head.split("\r\n")[0].split(" ", 2)
            headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
            length = int({k.lower(): v for k, v in headers.items()}.get("content-length", "0"))
            body = await reader.readexactly(length)
            await self._answer(method, path, writer, headers, body)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, method: str, path: str, writer: asyncio.StreamWriter, headers: dict[str, str],
                      body: bytes) -> None:
        if method == "GET" and path == "/health":
            health = {"status": "ok", "model": self.model, "type": self.model_type, "engine": "stub"}
            writer.write(_response(200, json.dumps(health).encode()))
        elif method == "GET":
            writer.write(_response(500, b'{"error": {"message": "stub has no ' + path.encode() + b'"}}'))
        else:
            self.hits += 1
            if self.mode == "ok":
                writer.write(_response(200, json.dumps({"served_by": self.url}).encode()))
            elif self.mode == "echo":
                echo = {"path": path, "body": body.decode(), "headers": {k.lower(): v for k, v in headers.items()}}
                writer.write(_response(200, json.dumps(echo).encode()))
            elif self.mode == "500":
                writer.write(_response(500, b'{"error": {"message": "boom", "type": "server_error"}}'))
            elif self.mode == "midstream":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"transfer-encoding: chunked\r\n\r\n")
                event = b'data: {"choices": [{"delta": {"content": "Hel"}}]}\n\n'
                writer.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                await writer.drain()
                return  # closing now leaves the chunked body unfinished
            elif self.mode == "hang":
                await self._stopping.wait()
            # mode "close": no answer at all
        await writer.drain()


def _response(status: int, body: bytes) -> bytes:
    reason = {200: "OK", 500: "Internal Server Error"}.get(status, "Status")
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode() + body
