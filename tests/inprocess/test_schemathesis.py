"""Property-based requests from each service's own OpenAPI schema (schemathesis), in-process.

Every service is driven through its ASGI app (schemathesis runs the app's lifespan itself): the
gateway, in front of fake-engine workers served for real on loopback so proxied requests go all the
way through; the service registry; the model registry on a temporary local store; and a fake-engine
worker. Each operation gets a fixed, derandomized example budget, so a CI run is the same run every
time (schemathesis adds its own edge cases: other methods, missing and wrong-typed parameters).

Checked on every answer: it is not a 5xx; a documented answer matches its documented schema; data the
schema forbids is refused with a 4xx. The services answer 400 for a bad request, as OpenAI does, while
FastAPI's generated schema documents 422, so the status code itself is not held against the schema.
Auth stays off (the default), so requests reach the handlers.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import negative_data_rejection, response_schema_conformance

from gateway.app import create_app as create_gateway
from gateway.settings import GatewaySettings
from model_registry.app import create_app as create_model_registry
from model_registry.settings import ModelRegistrySettings
from model_service.app import create_app as create_worker
from model_service.engines import build_engine
from model_service.settings import WorkerSettings
from service_registry.app import create_app as create_service_registry
from service_registry.settings import RegistrySettings
from tests.helpers.polling import eventually
from tests.helpers.servers import serve

# Examples per operation (the whole file stays around a minute on two cores).
MAX_EXAMPLES = 30
CHECKS = [not_a_server_error, response_schema_conformance, negative_data_rejection]
# The gateway's upstreams: one fake worker per model type, so every endpoint has somewhere to go.
FAKE_MODELS = {"fake-chat": "llm", "fake-embed": "embedding", "fake-whisper": "transcription",
               "fake-vision": "multimodal", "fake-rerank": "rerank"}

budget = settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))


def worker_settings(name: str, model_type: str) -> WorkerSettings:
    return WorkerSettings(_env_file=None, engine="fake", model_name=name, model_type=model_type,
                          default_max_tokens=16, max_queue=64)


class DeferredApp:
    """An ASGI app whose target a fixture binds later.

    Schemathesis wants each schema when tests are collected, but the apps need what fixtures make (the
    workers' URLs, a temporary store), and nothing should start while collecting. So each schema is
    read from an app built with placeholder settings, without sending it a request, and requests go
    to this stand-in, which passes them (lifespan included) to the app the test's fixture built."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert self.app is not None, "the test's fixture binds the app before the first request"
        await self.app(scope, receive, send)


def deferred_schema(placeholder: Any) -> tuple[Any, DeferredApp]:
    target = DeferredApp()
    schema = schemathesis.openapi.from_dict(placeholder.openapi())
    schema.app = target
    return schema, target


GATEWAY, GATEWAY_APP = deferred_schema(create_gateway(GatewaySettings(_env_file=None)))
SERVICE_REGISTRY, SERVICE_REGISTRY_APP = deferred_schema(create_service_registry(RegistrySettings(_env_file=None)))
MODEL_REGISTRY, MODEL_REGISTRY_APP = deferred_schema(create_model_registry(ModelRegistrySettings(_env_file=None)))
WORKER, WORKER_APP = deferred_schema(create_worker(worker_settings("fake-chat", "llm")))


class LoopbackWorkers:
    """Fake-engine workers under uvicorn on 127.0.0.1, served from one background thread's event loop:
    the gateway reaches them over real HTTP while schemathesis drives the gateway in-process."""

    def __init__(self) -> None:
        self.urls: Future[list[str]] = Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="loopback-workers")

    def __enter__(self) -> list[str]:
        self._thread.start()
        return self.urls.result(timeout=60)

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        try:
            async with AsyncExitStack() as stack:
                urls = [await stack.enter_async_context(serve(create_worker(worker_settings(name, kind))))
                        for name, kind in FAKE_MODELS.items()]
                async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
                    for url in urls:  # engines load in the background

                        async def ready(url: str = url) -> bool:
                            return (await client.get(f"{url}/health")).status_code == 200

                        await eventually(ready, f"the worker at {url} to be ready")
                self.urls.set_result(urls)
                await self._stop.wait()
        except BaseException as exc:
            if not self.urls.done():
                self.urls.set_exception(exc)
            raise


@pytest.fixture(scope="module", autouse=True)
def stop_lifespans() -> Iterator[None]:
    """Schemathesis keeps every app's lifespan running until the process exits; end them with the module."""
    yield
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def gateway_app() -> Iterator[None]:
    with LoopbackWorkers() as urls:
        GATEWAY_APP.app = create_gateway(GatewaySettings(_env_file=None, workers=urls, probe_interval_s=60.0,
                                                         read_timeout_s=30.0))
        yield


@pytest.fixture(scope="module")
def service_registry_app() -> None:
    SERVICE_REGISTRY_APP.app = create_service_registry(RegistrySettings(_env_file=None, poll_interval_s=60.0))


@pytest.fixture(scope="module")
def model_registry_app(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Downloads can only fail here: offline, and the hub endpoint is a closed loopback port.
    MODEL_REGISTRY_APP.app = create_model_registry(ModelRegistrySettings(
        _env_file=None, storage_backend="local", local_root=tmp_path_factory.mktemp("store"),
        hf_endpoint="http://127.0.0.1:9", resume_jobs=False))


@pytest.fixture(scope="module")
def worker_app() -> Iterator[None]:
    """Served with its engine already loaded, so no request meets the 503 of a model still loading."""
    settings = worker_settings("fake-chat", "llm")
    engine = build_engine(settings)
    engine.load()
    WORKER_APP.app = create_worker(settings, engine=engine)
    yield
    engine.close()


@GATEWAY.parametrize()
@budget
def test_gateway(case: Any, gateway_app: None) -> None:
    case.call_and_validate(checks=CHECKS)


@SERVICE_REGISTRY.parametrize()
@budget
def test_service_registry(case: Any, service_registry_app: None) -> None:
    case.call_and_validate(checks=CHECKS)


# Importing reads a folder on the registry host: a generated '/' would walk the whole disk.
# tests/inprocess/test_bad_input.py sends it bad input by hand.
@MODEL_REGISTRY.exclude(path_regex=r"/import$").parametrize()
@budget
def test_model_registry(case: Any, model_registry_app: None) -> None:
    case.call_and_validate(checks=CHECKS)


@WORKER.parametrize()
@budget
def test_worker(case: Any, worker_app: None) -> None:
    case.call_and_validate(checks=CHECKS)
