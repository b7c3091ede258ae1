"""Auth on the gateway: every route but /health needs a valid key of the right kind; user keys are
limited to their models; keys are made, listed and revoked through the admin routes and the CLI,
and their secrets appear nowhere but in the one creation answer."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI, Header

from model_service.app import create_app as create_worker
from model_service.settings import WorkerSettings
from service_registry.app import create_app as create_registry
from service_registry.settings import RegistrySettings
from stack.cli import main as cli_main
from tests.helpers.auth import (
    ADMIN,
    ADMIN_KEY,
    PROMPT,
    SERVICE,
    auth_on,
    authed_worker,
    bearer,
    create_key,
    keyed_gateway,
)
from tests.helpers.polling import eventually
from tests.helpers.ports import free_ports
from tests.helpers.servers import serve

OPEN = {("GET", "/health")}
# rerank: Jina's and Cohere's paths too; /usage/me: a key's own usage
USER_PATHS = re.compile(r"^/(v1/|v2/rerank$|rerank$|usage/me$)")
ADMIN_PATHS = re.compile(r"^/(admin/|usage$)")


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(authed_worker("chat-a"))
        b = await stack.enter_async_context(authed_worker("chat-b"))
        e = await stack.enter_async_context(authed_worker("emb", "embedding"))
        url, state, app = await stack.enter_async_context(
            keyed_gateway(tmp_path, [a, b, e], default_chat_model="chat-b"))
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=15, trust_env=False))
        yield {"url": url, "state": state, "app": app, "client": client, "home": tmp_path}


def operations(app: Any) -> list[tuple[str, str]]:
    """Every (method, path) of the gateway's OpenAPI schema, path parameters filled in."""
    out = []
    for path, item in app.openapi()["paths"].items():
        for method in item:
            out.append((method.upper(), re.sub(r"\{[^}]+\}", "key_x", path)))
    return out


async def call(client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    body = {} if method in ("POST", "PUT", "PATCH") else None
    return await client.request(method, path, json=body, headers=headers)


async def test_every_route_but_health_needs_a_valid_key_of_the_right_kind(stack: dict[str, Any]) -> None:
    client = stack["client"]
    user = (await create_key(stack["url"], name="walker"))["key"]
    ops = operations(stack["app"])
    assert ("POST", "/v1/chat/completions") in ops and ("POST", "/admin/keys") in ops and ("GET", "/usage") in ops
    for method, path in ops:
        if (method, path) in OPEN:
            assert (await call(client, method, path, {})).status_code == 200
            continue
        for headers in ({}, bearer("msp-not-a-key-at-all-0000000000"), {"authorization": f"Basic {ADMIN_KEY}"},
                        bearer(ADMIN_KEY + "x")):
            resp = await call(client, method, path, headers)
            assert resp.status_code == 401, (method, path, headers, resp.text)
            assert resp.json()["error"]["type"] == "authentication_error"
            assert resp.headers["www-authenticate"] == "Bearer"
        user_resp = await call(client, method, path, bearer(user))
        service_resp = await call(client, method, path, SERVICE)
        if USER_PATHS.match(path):
            assert user_resp.status_code not in (401, 403), (method, path, user_resp.text)
            assert service_resp.status_code == 403, (method, path)
        elif ADMIN_PATHS.match(path):
            assert user_resp.status_code == 403 and service_resp.status_code == 403, (method, path)
        else:  # operator routes: service token and admin
            assert user_resp.status_code == 403, (method, path)
            assert service_resp.status_code == 200, (method, path, service_resp.text)
        admin_resp = await call(client, method, path, ADMIN)
        assert admin_resp.status_code not in (401, 403), (method, path, admin_resp.text)


async def test_a_key_limited_to_one_model_sees_and_uses_only_that_model(stack: dict[str, Any]) -> None:
    key = await create_key(stack["url"], name="only-a", models=["chat-a"])
    sdk = openai.AsyncOpenAI(base_url=f"{stack['url']}/v1", api_key=key["key"], max_retries=0)
    async with sdk:
        answer = await sdk.chat.completions.create(model="chat-a", messages=PROMPT, temperature=0)
        assert answer.model == "chat-a" and answer.choices[0].message.content == "the quick brown fox jumps"
        assert [m.id for m in (await sdk.models.list()).data] == ["chat-a"]
        for model, create in (("chat-b", sdk.chat.completions.create), ("emb", sdk.embeddings.create)):
            kwargs = {"messages": PROMPT} if model == "chat-b" else {"input": "x"}
            with pytest.raises(openai.PermissionDeniedError) as refused:
                await create(model=model, **kwargs)
            assert refused.value.status_code == 403 and refused.value.code == "model_not_allowed"
            assert refused.value.body["param"] == "model" and model in refused.value.message
    # No model: the default (chat-b here) is resolved first, then checked.
    resp = await stack["client"].post("/v1/chat/completions", json={"messages": PROMPT}, headers=bearer(key["key"]))
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "model_not_allowed"
    every = (await stack["client"].get("/v1/models", headers=bearer((await create_key(stack["url"], name="all"))[
        "key"]))).json()
    assert sorted(m["id"] for m in every["data"]) == ["chat-a", "chat-b", "emb"]


async def test_keys_are_created_listed_and_revoked_and_secrets_never_leak(
        stack: dict[str, Any], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client, url, home = stack["client"], stack["url"], stack["home"]
    made = await create_key(url, name="api", models=["chat-a"], rpm=100, tpm=10_000)
    secret = made["key"]
    assert secret.startswith("msp-") and made["prefix"] == secret[:10] and made["revoked_at"] is None
    sdk = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0)
    await sdk.chat.completions.create(model="chat-a", messages=PROMPT)

    # The CLI runs in a thread: it blocks on HTTP while this loop serves the gateway.
    async def cli(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(cli_main, ["keys", *argv, "--url", url, "--admin-key", ADMIN_KEY])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = await cli("create", "--name", "from-cli", "--models", "chat-a,emb", "--rpm", "5")
    assert code == 0, err
    cli_secret = out.strip()
    assert cli_secret.startswith("msp-") and "shown only now" in err
    listed = (await client.get("/admin/keys", headers=ADMIN)).json()["data"]
    by_name = {k["name"]: k for k in listed}
    assert by_name["from-cli"]["models"] == ["chat-a", "emb"] and by_name["from-cli"]["rpm"] == 5
    assert set(by_name["api"]) == {"object", "id", "name", "prefix", "models", "rpm", "tpm", "created_at",
                                   "revoked_at"}
    code, table, _ = await cli("list")
    assert code == 0 and made["id"] in table and "from-cli" in table
    code, as_json, _ = await cli("list", "--json")
    assert code == 0 and by_name["from-cli"]["id"] in as_json

    code, out, err = await cli("revoke", made["id"])
    assert code == 0 and made["id"] in out
    with pytest.raises(openai.AuthenticationError):
        await sdk.chat.completions.create(model="chat-a", messages=PROMPT)
    await sdk.close()
    resp = await client.delete(f"/admin/keys/{by_name['from-cli']['id']}", headers=ADMIN)
    assert resp.status_code == 200 and resp.json()["revoked_at"] is not None
    again = await client.delete(f"/admin/keys/{by_name['from-cli']['id']}", headers=ADMIN)
    assert again.json()["revoked_at"] == resp.json()["revoked_at"]
    assert (await client.delete("/admin/keys/key_nope", headers=ADMIN)).status_code == 404
    code, _, err = await cli("revoke", "key_nope")
    assert code == 1 and "404" in err
    revoked = {k["id"]: k["revoked_at"] for k in (await client.get("/admin/keys", headers=ADMIN)).json()["data"]}
    assert revoked[made["id"]] is not None and revoked[by_name["api"]["id"]] is not None

    # The gateway restarted on the same file still refuses the revoked keys and knows the others.
    async with keyed_gateway(home, []) as (_, state2, _):
        assert state2.keys.lookup(hashlib.sha256(secret.encode()).hexdigest()) is None
        assert [k.id for k in state2.keys.list()] == [k["id"] for k in listed]

    await stack["state"].usage.flush()
    for where, text in (("list", str(listed) + table + as_json), ("key file", (home / "keys.json").read_text()),
                        ("usage log", (home / "usage.log").read_text()), ("logs", caplog.text)):
        for leaked in (secret, cli_secret, ADMIN_KEY):
            assert leaked not in text, f"a secret is in the {where}"
    for private in ("keys.json", "usage.log"):
        assert oct((home / private).stat().st_mode & 0o777) == "0o600", private


async def test_keys_are_refused_after_revocation_with_the_audit_in_the_log(stack: dict[str, Any]) -> None:
    client = stack["client"]
    made = await create_key(stack["url"], name="short-lived")
    body = {"model": "chat-a", "messages": PROMPT}
    assert (await client.post("/v1/chat/completions", json=body, headers=bearer(made["key"]))).status_code == 200
    await client.delete(f"/admin/keys/{made['id']}", headers=ADMIN)
    resp = await client.post("/v1/chat/completions", json=body, headers=bearer(made["key"]))
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "invalid_api_key"
    await stack["state"].usage.flush()
    lines = (stack["home"] / "usage.log").read_text().splitlines()
    assert any('"event":"key_created"' in line and made["id"] in line for line in lines)
    assert any('"event":"key_revoked"' in line and made["id"] in line for line in lines)
    assert any('"status":401' in line and f'"key_id":"{made["id"]}"' in line for line in lines)


async def test_bad_key_requests_are_400_and_the_key_file_is_unchanged(stack: dict[str, Any]) -> None:
    client = stack["client"]
    for body in ({}, {"name": ""}, {"name": "x", "models": []}, {"name": "x", "rpm": 0}, {"name": "x", "tpm": -1}):
        resp = await client.post("/admin/keys", json=body, headers=ADMIN)
        assert resp.status_code == 400, (body, resp.text)
        assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
    assert not (stack["home"] / "keys.json").exists()


def external_app(seen: list[str | None]) -> FastAPI:
    """An OpenAI-compatible upstream that records every Authorization header it is sent."""
    app = FastAPI()

    @app.get("/v1/models")
    async def models(authorization: str | None = Header(default=None)) -> dict[str, Any]:
        seen.append(authorization)
        return {"object": "list", "data": [{"id": "hosted", "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(authorization: str | None = Header(default=None)) -> dict[str, Any]:
        seen.append(authorization)
        return {"id": "x", "object": "chat.completion", "created": 0, "model": "hosted",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    return app


async def test_the_service_token_goes_to_the_registry_and_workers_never_to_externals(tmp_path: Path) -> None:
    seen: list[str | None] = []
    registry_port, worker_port, external_port = free_ports(3)
    ext = {"id": "ext", "base_url": f"http://127.0.0.1:{external_port}", "api_key": "sk-hosted-only-0042",
           "models": ["hosted"]}
    registry = create_registry(RegistrySettings(_env_file=None, poll_interval_s=0.2, probe_timeout_s=1.0,
                                                healthy_after=1, static_upstreams=[ext]), auth=auth_on())
    worker_settings = WorkerSettings(_env_file=None, engine="fake", model_name="local", model_type="llm",
                                     registry_url=f"http://127.0.0.1:{registry_port}",
                                     advertise_url=f"http://127.0.0.1:{worker_port}")
    async with (serve(external_app(seen), external_port), serve(registry, registry_port) as registry_url,
                serve(create_worker(worker_settings, auth=auth_on()), worker_port),
                keyed_gateway(tmp_path, [], registry_url=registry_url, probe_interval_s=0.2,
                              static_upstreams=[ext]) as (url, state, _)):
        key = (await create_key(url, name="both"))["key"]

        async def both_routable() -> bool:
            return {"local", "hosted"} <= {r.model for r in state.upstreams.snapshot.healthy()}

        await eventually(both_routable, "both upstreams routable")
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) as sdk:
            assert (await sdk.chat.completions.create(model="local", messages=PROMPT)).model == "local"
            assert (await sdk.chat.completions.create(model="hosted", messages=PROMPT)).model == "hosted"
    # The registry's probes and the gateway's call: the upstream's own key every time, never the token.
    assert len(seen) >= 2 and set(seen) == {"Bearer sk-hosted-only-0042"}
