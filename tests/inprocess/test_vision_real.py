"""The real vision engine on a tiny random LLaVA: real worker and gateway processes, the openai SDK.

What is under test is the worker's real path (``AutoProcessor`` + ``AutoModelForImageTextToText``
loading, the chat template's image tokens, pixel values, the KV-cache decode loop) and the
gateway in front of it. The model's words are random; the shapes, counts and errors are not.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from model_registry.catalog import Catalog
from model_registry.sources.folder import import_folder
from model_registry.storage import open_storage
from model_service.app import create_app
from model_service.settings import WorkerSettings
from tests.helpers.model_registry import registry_env, registry_settings
from tests.helpers.ports import free_port
from tests.helpers.processes import Proc, python_m
from tests.helpers.vision import image_message, png_data_url

MODEL = "tiny-llava"
MAX_IMAGES = 3


@pytest.fixture(scope="module")
def gateway_url(tiny_llava_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m stack worker --model-type multimodal`` behind ``python -m stack gateway``."""
    logs = tmp_path_factory.mktemp("vision-logs")
    port = free_port()
    worker = Proc("vision-worker", python_m(
        "stack", "worker", "--model-type", "multimodal", "--model-path", str(tiny_llava_path),
        "--model-name", MODEL, "--port", str(port), "--log-level", "warning",
    ), {"WORKER_MAX_IMAGES": str(MAX_IMAGES)}, port, logs)
    gport = free_port()
    gateway = Proc("gateway", python_m("stack", "gateway", "--workers", worker.url, "--port", str(gport),
                                       "--log-level", "warning"),
                   {"GATEWAY_PROBE_INTERVAL_S": "0.2"}, gport, logs, ready_path="/v1/models")
    try:
        worker.start()
        gateway.start()
        worker.wait_ready()
        gateway.wait_ready()
        for _ in range(100):  # the gateway's first probe may predate the worker's readiness
            if httpx.get(gateway.url + "/v1/models", timeout=2).json()["data"]:
                break
            time.sleep(0.1)
        yield gateway.url
    finally:
        gateway.stop()
        worker.stop()


@pytest.fixture
def client(gateway_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway_url + "/v1", api_key="none", max_retries=0, timeout=60)


def test_png_through_the_gateway_with_the_openai_sdk(client: openai.OpenAI) -> None:
    # No model named: images go to the default multimodal model.
    resp = client.chat.completions.create(
        model="", messages=[image_message("What is in this picture?", png_data_url())],  # type: ignore[list-item]
        max_tokens=6, temperature=0, seed=1,
    )
    assert resp.model == MODEL
    choice = resp.choices[0]
    assert choice.finish_reason == "length" and choice.message.content
    assert resp.usage.completion_tokens == 6
    # The processor expands each image part into 4 image tokens (2x2 patches): one more image, 4 more.
    two = client.chat.completions.create(
        model=MODEL, messages=[image_message("What is in this picture?", png_data_url(), png_data_url(9, 70))],  # type: ignore[list-item]
        max_tokens=1, temperature=0,
    )
    assert two.usage.prompt_tokens == resp.usage.prompt_tokens + 4


def test_streaming_matches_non_streaming(client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "Be brief."},
                image_message("Describe.", png_data_url(50, 20, (0, 90, 200)))]
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, temperature=0)  # type: ignore[arg-type]
    stream = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, temperature=0,  # type: ignore[arg-type]
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        whole.choices[0].finish_reason]


@pytest.mark.parametrize(("url", "code"), [
    ("data:image/png;base64,%%%not-base64%%%", "invalid_image"),
    ("data:image/png;base64," + base64.b64encode(b"GIF? no, just text").decode(), "invalid_image"),
    ("http://images.example/cat.png", "remote_images_disabled"),
])
def test_bad_images_are_400(client: openai.OpenAI, url: str, code: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=[image_message("x", url)], max_tokens=2)  # type: ignore[list-item]
    assert info.value.code == code


def test_too_many_images_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL, messages=[image_message("x", *[png_data_url(8, 8)] * (MAX_IMAGES + 1))], max_tokens=2,  # type: ignore[list-item]
        )
    assert info.value.code == "too_many_images"


async def test_vision_worker_starts_from_the_store(tiny_llava_path: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Imported into a local store, fetched and sha256-verified into the cache, loaded, answering."""
    store_settings = registry_settings("local", tmp_path)
    for key, value in registry_env(store_settings).items():
        monkeypatch.setenv(key, value)
    storage = open_storage(store_settings)
    try:
        import_folder(Catalog(storage), "tests/tiny-llava", tiny_llava_path, "multimodal")
    finally:
        storage.close()
    settings = WorkerSettings(_env_file=None, model_name="tests/tiny-llava", model_type="multimodal",
                              model_source="store", cache_dir=tmp_path / "cache")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://worker",
                                     timeout=60) as http:
            for _ in range(600):
                health = await http.get("/health")
                if health.status_code == 200 or health.json().get("status") == "error":
                    break
                await asyncio.sleep(0.05)
            assert health.status_code == 200, health.text
            assert health.json()["engine"] == "transformers-vision"
            resp = await http.post("/v1/chat/completions", json={
                "messages": [image_message("hi", png_data_url())], "max_tokens": 3, "temperature": 0})
            assert resp.status_code == 200, resp.text
            assert resp.json()["usage"]["completion_tokens"] >= 1
    assert (tmp_path / "cache").exists()
