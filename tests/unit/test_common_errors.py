"""The one error table: every failure a client sees is OpenAI-shaped with the right status."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from common.body_limit import BodyLimitMiddleware
from common.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    OverloadedError,
    ServiceUnavailableError,
    error_body,
    install_error_handlers,
    sse_error_event,
)


class Body(BaseModel):
    model: str
    n: int = 1


def make_app(max_bytes: int = 1024) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_bytes)

    @app.post("/echo")
    async def echo(body: Body) -> dict:
        return body.model_dump()

    @app.get("/missing-model")
    async def missing() -> None:
        raise ModelNotFoundError("The model 'x' does not exist.", param="model")

    @app.get("/busy")
    async def busy() -> None:
        raise OverloadedError("queue full", retry_after=3)

    @app.get("/down")
    async def down() -> None:
        raise ServiceUnavailableError("no healthy replica")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internal detail")

    return app


@pytest.fixture
async def client():
    transport = httpx.ASGITransport(app=make_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def assert_openai_error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    return err


async def test_malformed_json_is_400(client):
    resp = await client.post("/echo", content=b'{"model": "a",', headers={"content-type": "application/json"})
    err = assert_openai_error(resp, 400)
    assert err["type"] == "invalid_request_error"
    assert err["code"] == "invalid_json"


async def test_wrong_type_names_param(client):
    resp = await client.post("/echo", json={"model": "a", "n": "many"})
    err = assert_openai_error(resp, 400)
    assert err["param"] == "n"


async def test_missing_field_names_param(client):
    err = assert_openai_error(await client.post("/echo", json={"n": 2}), 400)
    assert err["param"] == "model"


async def test_unknown_model_is_404(client):
    err = assert_openai_error(await client.get("/missing-model"), 404)
    assert err["code"] == "model_not_found"
    assert err["param"] == "model"


async def test_overloaded_has_retry_after(client):
    resp = await client.get("/busy")
    assert_openai_error(resp, 429)
    assert resp.headers["retry-after"] == "3"


async def test_unavailable_is_503(client):
    assert_openai_error(await client.get("/down"), 503)


async def test_unexpected_error_hides_details(client):
    resp = await client.get("/boom")
    err = assert_openai_error(resp, 500)
    assert "secret" not in resp.text
    assert "Traceback" not in resp.text
    assert err["code"] == "internal_error"


async def test_unknown_route_and_method(client):
    assert assert_openai_error(await client.get("/nope"), 404)["code"] == "not_found"
    assert assert_openai_error(await client.get("/echo"), 405)["code"] == "method_not_allowed"


async def test_body_over_limit_by_header_is_413(client):
    resp = await client.post("/echo", content=b"x" * 2048, headers={"content-type": "application/json"})
    assert assert_openai_error(resp, 413)["code"] == "payload_too_large"


async def test_chunked_body_over_limit_is_413(client):
    async def chunks():
        for _ in range(10):
            yield b"x" * 512

    resp = await client.post("/echo", content=chunks(), headers={"content-type": "application/json"})
    assert assert_openai_error(resp, 413)["code"] == "payload_too_large"


def test_error_shapes():
    exc = InvalidRequestError("bad", param="temperature")
    assert exc.body() == error_body("bad", "invalid_request_error", "temperature", None)
    event = sse_error_event("upstream died")
    assert event.startswith(b"data: {") and event.endswith(b"\n\n")
