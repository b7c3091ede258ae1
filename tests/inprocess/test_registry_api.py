"""The registry's HTTP API inside its lifespan (ASGITransport): status codes and OpenAI error shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from service_registry.app import create_app
from service_registry.settings import RegistrySettings
from tests.helpers.http import assert_error

WORKER = {"url": "http://127.0.0.1:9", "models": ["m"], "type": "llm"}


@asynccontextmanager
async def registry(**kw: Any) -> AsyncIterator[httpx.AsyncClient]:
    # A long poll interval: these tests look at the API, not at probing.
    app = create_app(RegistrySettings(_env_file=None, poll_interval_s=60, probe_timeout_s=0.5, **kw))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
            yield client


async def test_register_is_201_then_200_and_shows_up() -> None:
    async with registry() as client:
        first = await client.post("/register", json={**WORKER, "id": "w1", "heartbeat_interval": 2})
        assert first.status_code == 201
        assert first.json() == {"id": "w1", "created": True, "heartbeat_interval_s": 2.0, "expires_after_s": 6.0}
        again = await client.post("/register", json={**WORKER, "id": "w1", "heartbeat_interval": 2})
        assert again.status_code == 200 and again.json()["created"] is False
        beat = await client.post("/register/w1/heartbeat")
        assert beat.status_code == 200 and beat.json() == {"id": "w1", "expires_after_s": 6.0}
        services = (await client.get("/services")).json()
        assert services["object"] == "list" and [s["id"] for s in services["data"]] == ["w1"]
        row = services["data"][0]
        assert row["status"] == "unknown" and row["priority"] == 0 and row["api_base"] == "http://127.0.0.1:9/v1"
        assert (await client.get("/services", params={"status": "healthy"})).json()["data"] == []
        assert (await client.get("/services/w1")).json()["id"] == "w1"
        health = (await client.get("/health")).json()
        assert health["status"] == "ok" and health["services"] == 1 and health["by_status"]["unknown"] == 1
        gpu = (await client.get("/gpu-stats")).json()["data"]
        assert gpu == [{"service_id": "w1", "url": "http://127.0.0.1:9", "models": ["m"], "status": "unknown",
                        "available": False, "reason": "GPU stats not read yet"}]
        assert (await client.delete("/register/w1")).json() == {"id": "w1", "deleted": True}
        metrics = (await client.get("/metrics")).text
        for event, count in (("registered", 1), ("refreshed", 1), ("heartbeat", 1), ("deregistered", 1)):
            assert f'service_registry_registrations_total{{event="{event}"}} {count}.0' in metrics


async def test_ids_with_slashes_work_everywhere() -> None:
    """A worker's default id is "{model}@{host}:{port}" and model ids contain "/" (org/name)."""
    from service_registry.client import RegistryClient

    sid = "HuggingFaceTB/SmolLM2-135M-Instruct@127.0.0.1:8000"
    async with registry() as client:
        assert (await client.post("/register", json={**WORKER, "id": sid})).status_code == 201
        assert (await client.post(f"/register/{sid}/heartbeat")).json()["id"] == sid
        assert (await client.get(f"/services/{sid}")).json()["id"] == sid
        reg = RegistryClient("http://registry", client=client)
        assert await reg.heartbeat(sid) is True
        assert await reg.deregister(sid) is True
        assert (await client.get(f"/services/{sid}")).status_code == 404


@pytest.mark.parametrize(("change", "param"), [
    ({"models": []}, "models"),
    ({"models": [" "]}, "models"),
    ({"url": "ftp://127.0.0.1:9"}, "url"),
    ({"url": "http://0.0.0.0:8000"}, "url"),
    ({"url": 12}, "url"),
    ({"type": "vision"}, "type"),
    ({"capacity": "lots"}, "capacity"),
    ({"gpu_indices": "0"}, "gpu_indices"),
    ({"heartbeat_interval": -1}, "heartbeat_interval"),
    ({"id": "bad id"}, "id"),
])
async def test_bad_registrations_are_400_naming_the_param(change: dict, param: str) -> None:
    async with registry() as client:
        resp = await client.post("/register", json={**WORKER, **change})
        assert_error(resp, 400, code="invalid_value", param=param)


async def test_unknown_ids_bad_json_and_big_bodies() -> None:
    async with registry(max_body_bytes=512) as client:
        assert_error(await client.delete("/register/nope"), 404, code="service_not_found")
        assert_error(await client.post("/register/nope/heartbeat"), 404, code="service_not_found")
        assert_error(await client.get("/services/nope"), 404, code="service_not_found")
        bad_json = await client.post("/register", content=b"{not json", headers={"content-type": "application/json"})
        assert_error(bad_json, 400, code="invalid_json")
        assert_error(await client.post("/register", json={**WORKER, "models": ["m" * 600]}), 413)
        assert_error(await client.get("/services", params={"status": "sleepy"}), 400, param="status")
