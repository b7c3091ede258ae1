"""A draining worker (model_service/drain.py): new requests get a 503 the gateway fails over on, the
requests already running finish, and the drain ends only when they have."""

from __future__ import annotations

import asyncio

from model_service.drain import drain
from tests.helpers.http import assert_error
from tests.helpers.polling import eventually

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "hello big world"}]


async def test_drain_refuses_new_requests_and_waits_for_running_ones(worker_client):
    async with worker_client(fake_token_delay_s=0.05, drain_linger_s=0, drain_timeout_s=60) as client:
        worker = client.app.state.worker
        running = asyncio.create_task(client.post(CHAT, json={"messages": HELLO, "max_tokens": 20}))
        await eventually(lambda: worker.admission.running > 0, "the first request to run")
        draining = asyncio.create_task(drain(worker))
        await eventually(lambda: worker.draining, "the drain to begin")
        refused = await client.post(CHAT, json={"messages": HELLO, "max_tokens": 2})
        assert_error(refused, 503, "draining")
        assert not draining.done()  # the running request holds the drain
        answer = await running
        assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"]
        await draining
        assert worker.admission.running == 0


async def test_a_worker_with_nothing_running_drains_without_waiting_out_its_timeout(worker_client):
    async with worker_client(drain_linger_s=0, drain_timeout_s=3600) as client:
        await asyncio.wait_for(drain(client.app.state.worker), 30)
        assert_error(await client.post(CHAT, json={"messages": HELLO}), 503, "draining")
