"""API keys on the service registry, the model registry and the workers (``MODEL_SERVICE_AUTH=true``).

Every route in each app's own OpenAPI schema is walked, so a route added later without the check fails
here: with no key and with a wrong one, everything but ``/health`` answers 401 in OpenAI's shape; the
service token passes service routes; the model registry's write routes want the admin key (403 for the
service token). Then a worker and a registry meet over real loopback HTTP: the right token registers and
is polled, a wrong one is refused with a log line that says what to fix, and the registry's probes give
the token to workers only, never to an external upstream.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Header

from common.auth import AuthSettings, new_secret
from model_registry.app import create_app as create_model_registry
from model_service.app import create_app as create_worker
from model_service.settings import WorkerSettings
from service_registry.app import create_app as create_registry
from service_registry.client import RegistryClient
from service_registry.settings import RegistrySettings
from tests.helpers.model_registry import registry_settings
from tests.helpers.polling import eventually
from tests.helpers.ports import free_ports
from tests.helpers.servers import serve, status_is

ADMIN = new_secret()
SERVICE = new_secret()
WRONG = new_secret()
OPEN = {("GET", "/health")}
# Plausible values for every path parameter the three apps declare (model ids hold a '/').
SAMPLES = {"service_id": "llm-0", "model_id": "org/model", "revision": "main", "path": "config.json",
           "alias": "current", "job_id": "job-0"}
METHODS = {"get", "post", "put", "patch", "delete"}


def auth_on(service_token: str = SERVICE) -> AuthSettings:
    return AuthSettings(_env_file=None, auth=True, admin_key=ADMIN, service_token=service_token)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def operations(app: FastAPI) -> list[tuple[str, str]]:
    """(method, concrete path) for every operation in the app's OpenAPI schema."""
    ops = []
    for template, item in app.openapi()["paths"].items():
        path = re.sub(r"\{(\w+)\}", lambda m: SAMPLES[m.group(1)], template)
        ops += [(method.upper(), path) for method in item if method in METHODS]
    return ops


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc", timeout=30) as client:
            yield client


def registry_app(auth: AuthSettings, **kw: Any) -> FastAPI:
    values: dict[str, Any] = {"poll_interval_s": 0.2, "probe_timeout_s": 1.0, "_env_file": None, **kw}
    return create_registry(RegistrySettings(**values), auth=auth)


def worker_app(auth: AuthSettings, **kw: Any) -> FastAPI:
    values: dict[str, Any] = {"engine": "fake", "model_name": "tiny", "model_type": "llm", "_env_file": None, **kw}
    return create_worker(WorkerSettings(**values), auth=auth)


async def send(client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    # Unknown fields fail validation, so a key that gets through never starts a job or changes state.
    body = {"unexpected_field": True} if method in ("POST", "PUT", "PATCH") else None
    return await client.request(method, path, headers=headers, json=body)


def assert_refused(resp: httpx.Response, status: int, presented: str | None, where: str) -> None:
    assert resp.status_code == status, f"{where}: HTTP {resp.status_code} {resp.text}"
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, where
    assert error["type"] == ("authentication_error" if status == 401 else "permission_error"), where
    if status == 401:
        assert resp.headers["www-authenticate"] == "Bearer", where
    if presented:
        assert presented not in resp.text and presented not in str(resp.headers), f"{where} echoed the key"


async def assert_locked(client: httpx.AsyncClient, app: FastAPI) -> list[tuple[str, str]]:
    """No key, a wrong key, or a right key under another scheme: 401 everywhere but /health."""
    ops = operations(app)
    assert ("GET", "/health") in ops and len(ops) > 3
    attempts = [({}, None), (bearer(WRONG), WRONG), ({"authorization": f"Basic {ADMIN}"}, ADMIN),
                ({"authorization": SERVICE}, SERVICE)]
    for method, path in ops:
        for headers, presented in attempts:
            resp = await send(client, method, path, headers)
            if (method, path) in OPEN:
                assert resp.status_code in (200, 503), f"{method} {path}: {resp.text}"
            else:
                assert_refused(resp, 401, presented, f"{method} {path} with {sorted(headers) or 'no key'}")
    # FastAPI's own schema and docs stay readable.
    assert (await client.get("/openapi.json")).status_code == 200
    return [op for op in ops if op not in OPEN]


async def assert_admitted(client: httpx.AsyncClient, ops: list[tuple[str, str]], key: str) -> None:
    for method, path in ops:
        resp = await send(client, method, path, bearer(key))
        assert resp.status_code not in (401, 403), f"{method} {path}: {resp.text}"
        assert key not in resp.text


# --- every route of every app -------------------------------------------------------------------------

async def test_service_registry_routes_need_the_service_token() -> None:
    app = registry_app(auth_on())
    async with running(app) as client:
        guarded = await assert_locked(client, app)
        assert {("POST", "/register"), ("GET", "/services"), ("GET", "/gpu-stats"), ("GET", "/metrics"),
                ("POST", "/register/llm-0/heartbeat"), ("DELETE", "/register/llm-0")} <= set(guarded)
        await assert_admitted(client, guarded, SERVICE)
        await assert_admitted(client, guarded, ADMIN)
        registered = await client.post("/register", headers=bearer(SERVICE),
                                       json={"id": "w-0", "url": "http://127.0.0.1:9", "models": ["m"],
                                             "type": "llm"})
        assert registered.status_code == 201, registered.text
        services = await client.get("/services", headers=bearer(SERVICE))
        assert [s["id"] for s in services.json()["data"]] == ["w-0"]
        assert (await client.get("/health")).json()["services"] == 1


async def test_model_registry_reads_take_the_service_token_and_writes_the_admin_key(tmp_path: Path) -> None:
    app = create_model_registry(registry_settings("local", tmp_path), auth=auth_on())
    async with running(app) as client:
        guarded = await assert_locked(client, app)
        reads = [op for op in guarded if op[0] == "GET"]
        writes = [op for op in guarded if op[0] != "GET"]
        assert {("GET", "/models"), ("GET", "/models/org/model/revisions/main/files/config.json"),
                ("GET", "/jobs"), ("GET", "/jobs/job-0"), ("GET", "/metrics")} <= set(reads)
        assert {("POST", "/models/org/model/download"), ("POST", "/models/org/model/import"),
                ("POST", "/models/org/model/export-onnx"), ("POST", "/models/org/model/export-gguf"),
                ("PUT", "/models/org/model/aliases/current"), ("DELETE", "/models/org/model"),
                ("DELETE", "/models/org/model/revisions/main")} == set(writes)
        await assert_admitted(client, reads, SERVICE)
        for method, path in writes:
            assert_refused(await send(client, method, path, bearer(SERVICE)), 403, SERVICE, f"{method} {path}")
        await assert_admitted(client, guarded, ADMIN)
        listed = await client.get("/models", headers=bearer(SERVICE))
        assert listed.status_code == 200 and listed.json()["data"] == []
        assert (await client.get("/health")).json()["status"] == "ok"


async def test_worker_routes_need_the_service_token() -> None:
    app = worker_app(auth_on())
    async with running(app) as client:
        await eventually(_ready(client), "the fake engine to load")
        guarded = await assert_locked(client, app)
        assert {("GET", "/v1/models"), ("GET", "/gpu-stats"), ("GET", "/metrics"),
                ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/v1/embeddings"),
                ("POST", "/v1/audio/transcriptions")} <= set(guarded)
        await assert_admitted(client, guarded, SERVICE)
        chat = await client.post("/v1/chat/completions", headers=bearer(SERVICE),
                                 json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                                       "max_tokens": 4})
        assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"]


async def test_no_key_is_refused_before_the_body_is_read(tmp_path: Path) -> None:
    """A caller without a valid key learns nothing about bodies: 401 even for malformed or huge JSON,
    and unknown paths are 401 too (no map of routes for strangers)."""
    apps = {"worker": (worker_app(auth_on()), "/v1/chat/completions"),
            "service registry": (registry_app(auth_on()), "/register"),
            "model registry": (create_model_registry(registry_settings("local", tmp_path), auth=auth_on()),
                               "/models/org/model/download")}
    for name, (app, path) in apps.items():
        async with running(app) as client:
            for body in (b"{not json", b"[" * 5000, b'{"model": 5}'):
                for headers in ({}, bearer("wrong-" + SERVICE)):
                    resp = await client.post(path, content=body,
                                             headers={**headers, "content-type": "application/json"})
                    assert_refused(resp, 401, None, f"{name} {path}")
            assert_refused(await client.get("/no/such/route"), 401, None, f"{name} unknown path")
            assert (await client.get("/health")).status_code in (200, 503)
            assert (await client.get("/openapi.json")).status_code == 200


def test_bad_auth_configuration_stops_start_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each factory reads the environment and refuses to build; the message names, never shows, a secret."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.delenv("MODEL_SERVICE_ENV", raising=False)
    monkeypatch.setenv("MODEL_SERVICE_AUTH", "true")
    monkeypatch.setenv("MODEL_SERVICE_ADMIN_KEY", ADMIN)
    monkeypatch.delenv("MODEL_SERVICE_SERVICE_TOKEN", raising=False)
    with pytest.raises(ValueError, match="MODEL_SERVICE_SERVICE_TOKEN is not set") as missing:
        create_registry(RegistrySettings(_env_file=None))
    assert ADMIN[-12:] not in str(missing.value)
    monkeypatch.setenv("MODEL_SERVICE_SERVICE_TOKEN", "change-me-service-token")
    with pytest.raises(ValueError, match="placeholder") as refused:
        create_worker(WorkerSettings(_env_file=None, engine="fake"))
    assert "change-me-service-token" not in str(refused.value)
    monkeypatch.setenv("MODEL_SERVICE_SERVICE_TOKEN", "short")
    with pytest.raises(ValueError, match="at least 16 characters"):
        create_model_registry(registry_settings("local", tmp_path))


# --- a worker and a registry over real HTTP -----------------------------------------------------------

async def test_worker_registers_with_the_service_token_and_is_polled() -> None:
    registry_port, worker_port = free_ports(2)
    async with serve(registry_app(auth_on()), registry_port) as registry_url:
        worker = worker_app(auth_on(), registry_url=registry_url, worker_id="tiny-0",
                            advertise_url=f"http://127.0.0.1:{worker_port}", heartbeat_interval_s=0.3)
        async with (serve(worker, worker_port),
                    RegistryClient(registry_url, headers=auth_on().outgoing_headers()) as client):
            record = await eventually(status_is(client, "tiny-0", "healthy"), "the worker polled healthy")
            assert record.engine == "fake"
            # /gpu-stats took the registry's token (this machine's answer: no GPU, not a refusal).
            record = await eventually(_gpu_read(client, "tiny-0"), "GPU stats read")
            assert "refused" not in (record.gpu_reason or "")
            async with httpx.AsyncClient(base_url=registry_url, trust_env=False, timeout=5) as http:
                assert_refused(await http.get("/services"), 401, None, "GET /services")
                assert (await http.get("/health")).json()["by_status"]["healthy"] == 1
        # The clean shutdown deregistered with the token too.
        assert (await client_services(registry_url)) == []


@pytest.mark.parametrize(("worker_auth", "hint"), [
    (auth_on(service_token=WRONG), "the service token is wrong"),
    (AuthSettings(_env_file=None, auth=False), "it needs the service token"),
], ids=["wrong-token", "auth-off"])
async def test_worker_with_the_wrong_token_is_refused_and_says_why(
        worker_auth: AuthSettings, hint: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="service_registry.client")
    registry_port, worker_port = free_ports(2)
    async with serve(registry_app(auth_on()), registry_port) as registry_url:
        worker = worker_app(worker_auth, registry_url=registry_url, worker_id="tiny-0",
                            advertise_url=f"http://127.0.0.1:{worker_port}", heartbeat_interval_s=0.3)
        async with serve(worker, worker_port) as worker_url:

            async def refusal() -> logging.LogRecord | None:
                return next((r for r in caplog.records if r.levelno == logging.ERROR
                             and "refused this caller (HTTP 401" in r.getMessage()), None)

            record = await eventually(refusal, "the refusal in the worker's log")
            assert hint in record.getMessage() and registry_url in record.getMessage()
            assert not record.exc_info  # a configuration message, not a stack trace
            # The worker keeps serving; it is just not discoverable.
            async with httpx.AsyncClient(base_url=worker_url, trust_env=False, timeout=5) as http:
                assert (await http.get("/health")).status_code == 200
            assert (await client_services(registry_url)) == []
    for secret in (ADMIN, SERVICE, WRONG):
        assert secret not in caplog.text


async def test_probes_send_the_token_to_workers_and_never_to_externals() -> None:
    seen: list[str | None] = []
    upstream_key = new_secret()
    registry_port, worker_port, upstream_port = free_ports(3)
    statics = [{"id": "ext", "base_url": f"http://127.0.0.1:{upstream_port}", "api_key": upstream_key,
                "models": ["ext-model"]}]
    async with (serve(_upstream(seen), upstream_port),
                serve(registry_app(auth_on(), static_upstreams=statics), registry_port) as registry_url,
                # A worker with another token, registered by hand with the admin key: /health is open,
                # so it is healthy, but its /gpu-stats refuses the registry's token and the record says so.
                serve(worker_app(auth_on(service_token=WRONG)), worker_port) as worker_url,
                RegistryClient(registry_url, headers=bearer(ADMIN)) as client):
        async with httpx.AsyncClient(base_url=registry_url, trust_env=False, timeout=5) as http:
            resp = await http.post("/register", headers=bearer(ADMIN),
                                   json={"id": "odd-0", "url": worker_url, "models": ["tiny"], "type": "llm"})
        assert resp.status_code == 201, resp.text
        await eventually(status_is(client, "ext", "healthy"), "the external polled healthy")
        await eventually(status_is(client, "odd-0", "healthy"), "the worker polled healthy")
        record = await eventually(_gpu_read(client, "odd-0"), "the GPU probe's answer")
        assert "refused the registry's service token (HTTP 401)" in (record.gpu_reason or "")
    assert seen and set(seen) == {f"Bearer {upstream_key}"}


# --- helpers ------------------------------------------------------------------------------------------

def _ready(client: httpx.AsyncClient):
    async def check() -> bool:
        return (await client.get("/health")).status_code == 200
    return check


def _gpu_read(client: RegistryClient, service_id: str):
    async def check() -> Any:
        record = (await client.services()).get(service_id)
        read = record is not None and (record.gpu_available is not None or record.gpu_reason)
        return record if read else None
    return check


async def client_services(registry_url: str) -> list[str]:
    async with RegistryClient(registry_url, headers=bearer(ADMIN)) as client:
        return [s.id for s in (await client.services()).data]


def _upstream(seen: list[str | None]) -> FastAPI:
    """An external OpenAI-compatible server that records the Authorization header of every probe."""
    app = FastAPI()

    @app.get("/v1/models")
    async def models(authorization: str | None = Header(default=None)) -> dict[str, Any]:
        seen.append(authorization)
        return {"object": "list", "data": [{"id": "ext-model", "object": "model"}]}

    return app
