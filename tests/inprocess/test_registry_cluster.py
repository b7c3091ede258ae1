"""The service registry against real worker apps over real loopback HTTP.

Workers (the real ``model_service`` app with the fake engine), the registry and a tiny external
OpenAI-compatible upstream each run under ``uvicorn.Server`` inside the test's event loop. Every wait
is a bounded loop on a condition; every server is stopped by its context manager.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
import uvicorn
from fastapi import FastAPI

from common.records import ServiceRecord
from model_service.app import create_app as create_worker
from model_service.settings import WorkerSettings
from service_registry.app import create_app as create_registry
from service_registry.client import RegistryClient
from service_registry.schemas import Registration
from service_registry.settings import RegistrySettings
from tests.conftest import free_port

T = TypeVar("T")
START_TIMEOUT_S = 15.0
WAIT_S = 10.0


@asynccontextmanager
async def serve(app: FastAPI, port: int) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn on 127.0.0.1:``port`` until the block ends; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1))
    server.config.host, server.config.port = "127.0.0.1", port
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn exited before it started")
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=START_TIMEOUT_S)


def worker_app(model: str, model_type: str = "llm", **kw: Any) -> FastAPI:
    return create_worker(WorkerSettings(_env_file=None, engine="fake", model_name=model, model_type=model_type,
                                        **kw))


def registry_app(**kw: Any) -> FastAPI:
    options: dict[str, Any] = {"poll_interval_s": 0.2, "probe_timeout_s": 1.0, "unhealthy_after": 2,
                               "healthy_after": 1, "_env_file": None}
    return create_registry(RegistrySettings(**{**options, **kw}))


async def wait_until(check: Callable[[], Awaitable[T | None]], what: str, timeout_s: float = WAIT_S) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout_s``."""
    last: Any = None
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                last = await check()
                if last:
                    return last
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}; last seen: {last!r}") from None


def status_is(client: RegistryClient, service_id: str, *statuses: str) -> Callable[[], Awaitable[Any]]:
    async def check() -> ServiceRecord | None:
        record = (await client.services()).get(service_id)
        return record if record is not None and record.status in statuses else None
    return check


async def test_workers_register_become_healthy_and_deregister() -> None:
    async with (serve(registry_app(), free_port()) as registry_url,
                RegistryClient(registry_url) as client,
                serve(worker_app("tiny-llm"), free_port()) as llm_url,
                serve(worker_app("tiny-emb", "embedding"), free_port()) as emb_url):
        llm = Registration(id="llm-0", url=llm_url, models=["tiny-llm"], type="llm", capacity=4,
                           gpu_indices=[0], heartbeat_interval=0.3)
        emb = Registration(url=emb_url, models=["tiny-emb"], type="embedding", heartbeat_interval=0.3)
        async with client.keep_registered(llm) as llm_member, client.keep_registered(emb) as emb_member:
            await wait_until(lambda: _registered(llm_member, emb_member), "both registrations")
            emb_id = emb_member.service_id
            assert emb_id is not None and emb_id.startswith("worker-")
            await wait_until(status_is(client, "llm-0", "healthy"), "llm healthy")
            record = await wait_until(status_is(client, emb_id, "healthy"), "embedding healthy")
            assert record.api_base == f"{emb_url}/v1" and record.engine == "fake" and record.type == "embedding"
            snapshot = await client.services()
            llm_record = snapshot.get("llm-0")
            assert llm_record.capacity == 4 and llm_record.gpu_indices == (0,) and llm_record.kind == "worker"
            assert llm_record.max_model_len and llm_record.probe_latency_ms is not None
            assert llm_record.last_seen and llm_record.last_heartbeat
            assert [s.id for s in snapshot.serving("tiny-llm")] == ["llm-0"]
            assert [s.id for s in (await client.services(model="tiny-emb")).data] == [emb_id]

            # No GPU on this machine: every worker is one row that says so.
            await wait_until(lambda: _gpu_rows_read(registry_url), "GPU stats read")
            rows = (await _get(registry_url, "/gpu-stats"))["data"]
            assert {r["service_id"] for r in rows} == {"llm-0", emb_id}
            assert all(r["available"] is False and r["reason"] and r["url"] for r in rows)
            health = await _get(registry_url, "/health")
            assert health["by_status"]["healthy"] == 2 and health["models"] == ["tiny-emb", "tiny-llm"]

        # Leaving the blocks deregistered both at once (no waiting for expiry).
        assert (await client.services()).data == ()
        metrics = (await _text(registry_url, "/metrics"))
        assert 'service_registry_registrations_total{event="deregistered"} 2.0' in metrics
        assert 'service_registry_services{kind="worker",status="healthy"} 0.0' in metrics


async def test_stopped_worker_turns_unhealthy_then_recovers_on_the_same_port() -> None:
    port = free_port()
    async with (serve(registry_app(unhealthy_after=2), free_port()) as registry_url,
                RegistryClient(registry_url) as client):
        reg = Registration(id="flaky", url=f"http://127.0.0.1:{port}", models=["tiny-llm"], type="llm",
                           heartbeat_interval=0.3)
        async with client.keep_registered(reg):
            async with serve(worker_app("tiny-llm"), port):
                await wait_until(status_is(client, "flaky", "healthy"), "worker healthy")
            down = await wait_until(status_is(client, "flaky", "unhealthy"), "worker unhealthy after stop")
            assert down.consecutive_failures >= 2 and "unreachable" in (down.reason or "")
            assert (await client.services()).serving("tiny-llm") == ()
            async with serve(worker_app("tiny-llm"), port):
                back = await wait_until(status_is(client, "flaky", "healthy"), "worker healthy again")
                assert back.consecutive_failures == 0 and back.reason is None
        failures = await _text(registry_url, "/metrics")
        assert f'service_registry_probe_failures_total{{replica="http://127.0.0.1:{port}"}}' in failures


async def test_loading_worker_is_loading_until_ready() -> None:
    async with (serve(registry_app(), free_port()) as registry_url,
                RegistryClient(registry_url) as client,
                serve(worker_app("slow", fake_load_delay_s=2.0), free_port()) as url):
        await client.register(Registration(id="slow", url=url, models=["slow"], type="llm"))
        loading = await wait_until(status_is(client, "slow", "loading"), "worker loading", timeout_s=2.0)
        assert "loading" in (loading.reason or "")
        await wait_until(status_is(client, "slow", "healthy"), "worker healthy after load")


async def test_silent_worker_expires() -> None:
    async with (serve(registry_app(heartbeat_ttl_factor=2.0), free_port()) as registry_url,
                RegistryClient(registry_url) as client,
                serve(worker_app("quiet"), free_port()) as url):
        answer = await client.register(Registration(url=url, models=["quiet"], type="llm",
                                                    heartbeat_interval=0.3))
        assert answer.created and answer.expires_after_s == 0.6
        await wait_until(status_is(client, answer.id, "healthy"), "registered worker healthy")

        async def gone() -> bool:
            return (await client.services()).get(answer.id) is None
        await wait_until(gone, "registration to expire", timeout_s=5.0)
        assert not await client.heartbeat(answer.id)  # the registry forgot it: 404, so "register again"
        metrics = await _text(registry_url, "/metrics")
        assert 'service_registry_registrations_total{event="expired"} 1.0' in metrics


async def test_membership_survives_a_registry_restart() -> None:
    registry_port = free_port()
    registry_url = f"http://127.0.0.1:{registry_port}"
    async with (RegistryClient(registry_url, timeout_s=1.0) as client,
                serve(worker_app("m"), free_port()) as url):
        reg = Registration(id="sticky", url=url, models=["m"], type="llm", heartbeat_interval=0.2)
        async with client.keep_registered(reg, initial_backoff_s=0.05, max_backoff_s=0.2) as member:
            await asyncio.sleep(0.3)  # the registry is not up yet: the membership keeps retrying quietly
            assert not member.registered.is_set()
            async with serve(registry_app(), registry_port):
                await wait_until(status_is(client, "sticky", "healthy"), "registered once the registry is up")
            # A fresh registry knows nothing: the next heartbeat gets 404 and the worker registers again.
            async with serve(registry_app(), registry_port):
                await wait_until(status_is(client, "sticky", "healthy"), "registered again after restart")


async def _registered(*members: Any) -> bool:
    return all(m.registered.is_set() for m in members)


async def _get(base: str, path: str) -> Any:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
        resp = await http.get(f"{base}{path}")
        resp.raise_for_status()
        return resp.json()


async def _text(base: str, path: str) -> str:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
        return (await http.get(f"{base}{path}")).text


async def _gpu_rows_read(registry_url: str) -> bool:
    rows = (await _get(registry_url, "/gpu-stats"))["data"]
    return bool(rows) and all("not read yet" not in r.get("reason", "") for r in rows)
