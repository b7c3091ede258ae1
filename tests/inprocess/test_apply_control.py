"""The running ``up``'s control endpoint (stack/control.py): admin-only, and a bad file changes nothing."""

from __future__ import annotations

import textwrap

import httpx

from stack.cli import main
from stack.control import create_control_app
from stack.deployment_file import parse_deployment
from stack.up import LocalStack, StackOptions
from tests.helpers.auth import ADMIN_KEY, SERVICE_TOKEN, auth_off, auth_on, bearer
from tests.helpers.http import assert_error
from tests.helpers.ports import free_port

FILE = "models:\n  - {id: chat, type: llm, source: {starter: llm}, engine: fake}\n"


def _client(auth) -> httpx.AsyncClient:
    stack = LocalStack(StackOptions(parse_deployment(FILE)))
    app = create_control_app(stack, auth)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://control")


async def test_a_bad_file_is_refused_with_one_line_per_problem_and_nothing_runs():
    bad = textwrap.dedent("""\
        models:
          - id: chat
            type: llm
            source: {starter: llm}
            replicas: two
            colour: blue
        """)
    async with _client(auth_off()) as client:
        resp = await client.post("/apply", json={"text": bad, "source": "site.yaml"})
        message = assert_error(resp, 400)["message"]
        assert "site.yaml:5: models[0].replicas:" in message
        assert "site.yaml:6: models[0].colour: unknown field" in message
        assert (await client.get("/status")).json() == {"workers": []}


async def test_only_the_admin_key_may_change_the_stack():
    async with _client(auth_on()) as client:
        assert_error(await client.post("/rollout"), 401)
        assert_error(await client.post("/apply", json={"text": FILE}, headers=bearer(SERVICE_TOKEN)), 403)
        assert (await client.get("/status", headers=bearer(ADMIN_KEY))).status_code == 200


def test_apply_checks_the_file_before_it_looks_for_the_stack(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - {id: a, type: llm, source: {starter: llm}, port: 9000}\n"
                   "  - {id: b, type: llm, source: {starter: llm}, port: 9000}\n")
    assert main(["apply", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "nothing was changed" in err and "bad.yaml:3: models[1].port: port 9000" in err

    good = tmp_path / "good.yaml"
    good.write_text(f"ports: {{gateway: {free_port()}}}\n" + FILE)
    assert main(["apply", str(good)]) == 1
    assert "no running 'model-service up'" in capsys.readouterr().err
