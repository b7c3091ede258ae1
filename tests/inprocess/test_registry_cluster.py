"""The service registry against real worker apps over real loopback HTTP.

Workers (the real ``model_service`` app with the fake engine), the registry and a tiny external
OpenAI-compatible upstream each run under ``uvicorn.Server`` inside the test's event loop. Every wait
is a bounded loop on a condition; every server is stopped by its context manager.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from service_registry.client import RegistryClient
from service_registry.schemas import Registration
from tests.helpers.polling import eventually
from tests.helpers.ports import free_port
from tests.helpers.servers import registry_app, serve, status_is
from tests.helpers.workers import worker_app


async def test_workers_register_become_healthy_and_deregister() -> None:
    async with (serve(registry_app(), free_port()) as registry_url,
                RegistryClient(registry_url) as client,
                serve(worker_app("tiny-llm"), free_port()) as llm_url,
                serve(worker_app("tiny-emb", "embedding"), free_port()) as emb_url):
        llm = Registration(id="llm-0", url=llm_url, models=["tiny-llm"], type="llm", capacity=4,
                           gpu_indices=[0], heartbeat_interval=0.3)
        emb = Registration(url=emb_url, models=["tiny-emb"], type="embedding", heartbeat_interval=0.3)
        async with client.keep_registered(llm) as llm_member, client.keep_registered(emb) as emb_member:
            await eventually(lambda: _registered(llm_member, emb_member), "both registrations")
            emb_id = emb_member.service_id
            assert emb_id is not None and emb_id.startswith("worker-")
            await eventually(status_is(client, "llm-0", "healthy"), "llm healthy")
            record = await eventually(status_is(client, emb_id, "healthy"), "embedding healthy")
            assert record.api_base == f"{emb_url}/v1" and record.engine == "fake" and record.type == "embedding"
            snapshot = await client.services()
            llm_record = snapshot.get("llm-0")
            assert llm_record.capacity == 4 and llm_record.gpu_indices == (0,) and llm_record.kind == "worker"
            assert llm_record.max_model_len and llm_record.probe_latency_ms is not None
            assert llm_record.last_seen and llm_record.last_heartbeat
            assert [s.id for s in snapshot.serving("tiny-llm")] == ["llm-0"]
            assert [s.id for s in (await client.services(model="tiny-emb")).data] == [emb_id]

            # No GPU on this machine: every worker is one row that says so.
            await eventually(lambda: _gpu_rows_read(registry_url), "GPU stats read")
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
                await eventually(status_is(client, "flaky", "healthy"), "worker healthy")
            down = await eventually(status_is(client, "flaky", "unhealthy"), "worker unhealthy after stop")
            assert down.consecutive_failures >= 2 and "unreachable" in (down.reason or "")
            assert (await client.services()).serving("tiny-llm") == ()
            async with serve(worker_app("tiny-llm"), port):
                back = await eventually(status_is(client, "flaky", "healthy"), "worker healthy again")
                assert back.consecutive_failures == 0 and back.reason is None
        failures = await _text(registry_url, "/metrics")
        assert f'service_registry_probe_failures_total{{replica="http://127.0.0.1:{port}"}}' in failures


async def test_loading_worker_is_loading_until_ready() -> None:
    async with (serve(registry_app(), free_port()) as registry_url,
                RegistryClient(registry_url) as client,
                serve(worker_app("slow", fake_load_delay_s=2.0), free_port()) as url):
        await client.register(Registration(id="slow", url=url, models=["slow"], type="llm"))
        loading = await eventually(status_is(client, "slow", "loading"), "worker loading", within_s=2.0)
        assert "loading" in (loading.reason or "")
        await eventually(status_is(client, "slow", "healthy"), "worker healthy after load")


async def test_silent_worker_expires() -> None:
    async with (serve(registry_app(heartbeat_ttl_factor=2.0), free_port()) as registry_url,
                RegistryClient(registry_url) as client,
                serve(worker_app("quiet"), free_port()) as url):
        answer = await client.register(Registration(url=url, models=["quiet"], type="llm",
                                                    heartbeat_interval=0.3))
        assert answer.created and answer.expires_after_s == 0.6
        await eventually(status_is(client, answer.id, "healthy"), "registered worker healthy")

        async def gone() -> bool:
            return (await client.services()).get(answer.id) is None
        await eventually(gone, "registration to expire", within_s=5.0)
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
                await eventually(status_is(client, "sticky", "healthy"), "registered once the registry is up")
            # A fresh registry knows nothing: the next heartbeat gets 404 and the worker registers again.
            async with serve(registry_app(), registry_port):
                await eventually(status_is(client, "sticky", "healthy"), "registered again after restart")


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
