"""Image parts over HTTP with the fake engine: the worker's image checks and the gateway's routing.

The multimodal fake "sees" each decoded image as ``[image WxH]`` and echoes the user's last message,
so these tests show that images were decoded, in order, without any model.
"""

from __future__ import annotations

import base64
from contextlib import AsyncExitStack

import httpx

from gateway.request import has_image_parts
from model_service.app import create_app
from model_service.settings import WorkerSettings
from tests.helpers.http import assert_error, sse_events
from tests.helpers.servers import gateway, serve
from tests.helpers.vision import image_message, png_data_url


def chat(*messages: dict, **extra: object) -> dict:
    return {"messages": list(messages), "temperature": 0, **extra}


async def test_multimodal_worker_sees_images_in_order(worker_client):
    body = chat(image_message("compare", png_data_url(40, 32), png_data_url(7, 9)))
    async with worker_client(model_type="multimodal") as client:
        resp = await client.post("/v1/chat/completions", json=body)
        assert resp.status_code == 200, resp.text
        assert resp.json()["choices"][0]["message"]["content"] == "compare [image 40x32] [image 7x9]"
        streamed = await client.post("/v1/chat/completions", json={**body, "stream": True})
        events = sse_events(streamed.text)
        assert events[-1] == "[DONE]"
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"])
        assert text == "compare [image 40x32] [image 7x9]"
        card = (await client.get("/v1/models")).json()["data"][0]
        assert "vision" in card["capabilities"]


async def test_text_only_messages_work_on_a_multimodal_worker(worker_client):
    async with worker_client(model_type="multimodal") as client:
        resp = await client.post("/v1/chat/completions", json=chat({"role": "user", "content": "just text"}))
        assert resp.json()["choices"][0]["message"]["content"] == "just text"


async def test_llm_worker_refuses_images(worker_client):
    async with worker_client(model_type="llm") as client:
        resp = await client.post("/v1/chat/completions", json=chat(image_message("hi", png_data_url())))
        assert_error(resp, 400, "images_not_supported", "messages")


async def test_bad_images_are_400_never_500(worker_client):
    not_png = "data:image/png;base64," + base64.b64encode(b"plain text, not an image").decode()
    truncated = png_data_url()[:-40] + "AAAA"
    cases = {
        "data:image/png;base64,@@not base64@@": "invalid_image",
        not_png: "invalid_image",
        truncated: "invalid_image",
        "data:image/png,rawbytes": "invalid_image",
        "ftp://example.com/cat.png": "invalid_image",
        "http://example.com/cat.png": "remote_images_disabled",
    }
    async with worker_client(model_type="multimodal") as client:
        for url, code in cases.items():
            resp = await client.post("/v1/chat/completions", json=chat(image_message("x", url)))
            assert_error(resp, 400, code, "messages")


async def test_image_limits(worker_client):
    async with worker_client(model_type="multimodal", max_images=2, max_image_pixels=1000,
                             max_image_bytes=50_000) as client:
        three = chat(image_message("x", *[png_data_url(10, 10)] * 3))
        assert_error(await client.post("/v1/chat/completions", json=three), 400, "too_many_images")
        big = chat(image_message("x", png_data_url(100, 100)))
        err = assert_error(await client.post("/v1/chat/completions", json=big), 400, "invalid_image")
        assert "100x100" in err["message"]
        heavy = "data:image/png;base64," + base64.b64encode(b"\0" * 60_000).decode()
        assert_error(await client.post("/v1/chat/completions", json=chat(image_message("x", heavy))), 400,
                     "invalid_image")


async def test_remote_images_when_allowed(worker_client):
    """With WORKER_ALLOW_REMOTE_IMAGES the worker fetches the URL (here: a loopback image server)."""
    png = base64.b64decode(png_data_url(12, 8).split(",", 1)[1])
    from fastapi import FastAPI
    from fastapi.responses import Response

    images = FastAPI()
    images.get("/cat.png")(lambda: Response(png, media_type="image/png"))
    async with serve(images) as base, worker_client(model_type="multimodal", allow_remote_images=True) as client:
        resp = await client.post("/v1/chat/completions", json=chat(image_message("look", f"{base}/cat.png")))
        assert resp.json()["choices"][0]["message"]["content"] == "look [image 12x8]"
        missing = await client.post("/v1/chat/completions", json=chat(image_message("x", f"{base}/nope.png")))
        assert_error(missing, 400, "invalid_image")


def test_has_image_parts_is_a_shallow_look():
    assert has_image_parts(chat(image_message("x", "data:,")))
    assert not has_image_parts(chat({"role": "user", "content": "text"}))
    assert not has_image_parts({"messages": "nonsense"})
    assert not has_image_parts({"messages": [{"role": "user", "content": [{"type": "text", "text": "t"}]}, 3]})


async def test_gateway_routes_images_to_the_multimodal_model():
    """No model + images: the multimodal worker; no model, text only: the llm; images to the llm: 400."""
    def settings(name: str, type_: str) -> WorkerSettings:
        return WorkerSettings(_env_file=None, engine="fake", model_name=name, model_type=type_)

    async with AsyncExitStack() as stack:
        llm = await stack.enter_async_context(serve(create_app(settings("text-model", "llm"))))
        vis = await stack.enter_async_context(serve(create_app(settings("vision-model", "multimodal"))))
        url, _ = await stack.enter_async_context(gateway([llm, vis], ordered=True))
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            resp = await client.post("/v1/chat/completions", json=chat(image_message("what", png_data_url(5, 6))))
            assert resp.status_code == 200, resp.text
            assert resp.json()["model"] == "vision-model"
            assert resp.json()["choices"][0]["message"]["content"] == "what [image 5x6]"
            text = await client.post("/v1/chat/completions", json=chat({"role": "user", "content": "hi"}))
            assert text.json()["model"] == "text-model"
            wrong = await client.post("/v1/chat/completions",
                                      json={**chat(image_message("x", png_data_url())), "model": "text-model"})
            err = assert_error(wrong, 400, "model_not_multimodal", "messages")
            assert "vision-model" in err["message"]
            cards = {c["id"]: c for c in (await client.get("/v1/models")).json()["data"]}
            assert cards["vision-model"]["type"] == "multimodal"
            assert "vision" in cards["vision-model"]["capabilities"]
            assert "vision" not in cards["text-model"]["capabilities"]


async def test_gateway_default_multimodal_model_setting():
    async with AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(serve(create_app(WorkerSettings(
            _env_file=None, engine="fake", model_name=name, model_type="multimodal")))) for name in ("vis-a", "vis-b")]
        url, _ = await stack.enter_async_context(gateway(urls, ordered=True, default_multimodal_model="vis-b"))
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            resp = await client.post("/v1/chat/completions", json=chat(image_message("x", png_data_url())))
            assert resp.json()["model"] == "vis-b"
