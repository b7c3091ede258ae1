"""The real chat model (SmolLM2) behind a real service registry and the gateway.

The registry is a separate OS process. The worker is the real worker app serving the session's
already-loaded SmolLM2 engine (loading torch and the model again in a child process would cost tens
of seconds on a small machine) with ``registry_url`` set, so it registers itself through its own
lifespan; the gateway finds it only through the registry (no GATEWAY_WORKERS).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from model_service.app import create_app as create_worker
from model_service.settings import WorkerSettings
from tests.helpers.polling import eventually_sync
from tests.helpers.ports import free_port
from tests.helpers.processes import healthy_in_registry, registry_proc
from tests.helpers.servers import gateway, serve

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


async def test_real_chat_model_answers_through_registry_and_gateway(worker_llm_engine, tmp_path: Path) -> None:
    registry = registry_proc(tmp_path, poll_s=0.2)
    port = free_port()
    settings = WorkerSettings(_env_file=None, model_name="smollm2", model_type="llm", port=port,
                              registry_url=registry.url, worker_id="smollm-1", heartbeat_interval_s=0.5)
    try:
        registry.start()
        registry.wait_ready()
        async with serve(create_worker(settings, engine=worker_llm_engine), port) as worker_url:
            await asyncio.to_thread(eventually_sync, healthy_in_registry(registry.url, ["smollm-1"]),
                                    "the worker healthy in the registry")
            async with gateway([], registry_url=registry.url, probe_interval_s=0.2,
                               read_timeout_s=120) as (url, state):
                async with httpx.AsyncClient(base_url=url, timeout=120, trust_env=False) as client:
                    models = (await client.get("/v1/models")).json()["data"]
                    assert [m["id"] for m in models] == ["smollm2"]
                    resp = await client.post("/v1/chat/completions", json={
                        "model": "smollm2", "messages": FRANCE, "temperature": 0, "max_tokens": 20})
                    assert resp.status_code == 200, resp.text
                    assert "Paris" in resp.json()["choices"][0]["message"]["content"]
                    assert state.metrics.served[worker_url] == 1
        # A clean shutdown deregistered the worker (no wait for a heartbeat TTL).
        async with httpx.AsyncClient(trust_env=False) as client:
            ids = {row["id"] for row in (await client.get(f"{registry.url}/services")).json()["data"]}
        assert "smollm-1" not in ids
    finally:
        registry.stop()
