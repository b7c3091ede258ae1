"""The console's deployment routes: the gateway in front of a real ``up`` control app on loopback.

Shown: ``GET /admin/deployment`` gives the running file's text (the text ``up`` started from while it
still describes what runs, else YAML rendered from what runs, which parses back to the same deployment)
and the workers; ``POST /admin/deployment/apply`` forwards the caller's key and streams the control
endpoint's JSON lines back; a bad file is a 400 listing every problem, a second apply a 409, a user key
a 403; without a control endpoint ``GET`` says so and ``POST`` is a 404 with its own code; a control
endpoint that is gone is a 503.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from gateway.app import create_app
from gateway.settings import GatewaySettings
from stack.control import create_control_app
from stack.deployment_file import parse_deployment
from stack.up import LocalStack, StackOptions
from tests.helpers.auth import ADMIN, ADMIN_KEY, auth_on
from tests.helpers.http import assert_error
from tests.helpers.ports import free_port
from tests.helpers.servers import serve

FILE = """\
# the site's file: comments stay when nothing else changed
models:
  - {id: chat, type: llm, source: {starter: llm}, engine: fake}
  - {id: vectors, type: embedding, source: {starter: embedding}, engine: fake, replicas: 2}
"""


@asynccontextmanager
async def gateway(home: Path, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    settings = GatewaySettings(_env_file=None, keys_file=home / "keys.json", usage_log=home / "usage.log",
                               probe_interval_s=60.0, **overrides)
    app = create_app(settings, auth=auth_on())
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw",
                                     timeout=30) as client:
            yield client


@asynccontextmanager
async def with_control(home: Path) -> AsyncIterator[tuple[LocalStack, httpx.AsyncClient]]:
    """A stack that runs no process yet (its file's workers are not started): enough for what is read,
    refused or checked before a replica starts."""
    stack = LocalStack(StackOptions(parse_deployment(FILE), text=FILE))
    async with serve(create_control_app(stack, auth_on())) as url, gateway(home, control_url=url) as client:
        yield stack, client


async def test_the_running_file_is_read_through_the_gateway(tmp_path: Path) -> None:
    async with with_control(tmp_path) as (stack, client):
        got = (await client.get("/admin/deployment", headers=ADMIN)).json()
        assert got == {"configured": True, "text": FILE, "workers": []}
        # Started with flags on top (another gateway port): the text is rendered from what runs.
        running = stack.options.deployment.model_copy(update={"ports": stack.options.deployment.ports.model_copy(
            update={"gateway": 18080})})
        stack.options = replace(stack.options, deployment=running)
        text = (await client.get("/admin/deployment", headers=ADMIN)).json()["text"]
        assert "gateway: 18080" in text and "comments" not in text
        assert parse_deployment(text) == running


async def test_a_bad_file_is_a_400_with_every_problem(tmp_path: Path) -> None:
    bad = FILE.replace("replicas: 2", "replicas: two").replace("engine: fake}\n  -", "engine: fake, colour: red}\n  -")
    async with with_control(tmp_path) as (_, client):
        resp = await client.post("/admin/deployment/apply", headers=ADMIN, json={"text": bad, "source": "site.yaml"})
        message = assert_error(resp, 400)["message"]
        assert "nothing was changed" in message
        assert "site.yaml:3: models[0].colour: unknown field" in message
        assert "site.yaml:4: models[1].replicas" in message


async def test_an_apply_streams_the_control_endpoints_lines_and_one_runs_at_a_time(tmp_path: Path) -> None:
    moved = FILE.replace("models:", "ports: {gateway: 18081}\nmodels:")
    async with with_control(tmp_path) as (stack, client):
        async with client.stream("POST", "/admin/deployment/apply", headers=ADMIN, json={"text": moved}) as resp:
            assert resp.status_code == 200 and resp.headers["content-type"] == "application/x-ndjson"
            lines = [json.loads(line) async for line in resp.aiter_lines() if line.strip()]
        assert lines == [{"event": "done", "ok": False, "error": "this needs a restart of 'up': ports changed"}]
        assert stack.options.text == FILE  # a refused apply leaves the running file as it was

        with stack.apply_lock:  # an apply still rolling
            resp = await client.post("/admin/deployment/apply", headers=ADMIN, json={"text": FILE})
        assert_error(resp, 409, code="apply_in_progress")


async def test_only_the_admin_key_reaches_the_deployment(tmp_path: Path) -> None:
    async with with_control(tmp_path) as (_, client):
        made = await client.post("/admin/keys", headers=ADMIN, json={"name": "user"})
        user = {"authorization": f"Bearer {made.json()['key']}"}
        assert_error(await client.get("/admin/deployment", headers=user), 403)
        assert_error(await client.post("/admin/deployment/apply", headers=user, json={"text": FILE}), 403)
        assert_error(await client.get("/admin/deployment"), 401)
        assert ADMIN_KEY not in (await client.get("/admin/deployment", headers=ADMIN)).text


async def test_without_a_control_endpoint_the_answer_says_so(tmp_path: Path) -> None:
    async with gateway(tmp_path) as client:
        got = (await client.get("/admin/deployment", headers=ADMIN)).json()
        assert got["configured"] is False and "model-service up" in got["message"]
        resp = await client.post("/admin/deployment/apply", headers=ADMIN, json={"text": FILE})
        assert_error(resp, 404, code="deployment_control_not_configured")
    async with gateway(tmp_path, control_url=f"http://127.0.0.1:{free_port()}") as client:
        resp = await client.post("/admin/deployment/apply", headers=ADMIN, json={"text": FILE})
        assert "control endpoint did not answer" in assert_error(resp, 503)["message"]
