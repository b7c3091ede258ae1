"""The console's data routes with real parts on loopback: the model store's changes through the gateway
(a real model registry with keys on, a replica serving the model), usage over time and "my usage".

Shown: an import through the gateway runs as a registry job to a revision; moving ``current`` back is a
rollback; a revision an alias points to is refused deletion (409) while a replica serves the model, an
unused one is deleted; user keys get 403 on every store route. ``/usage/me`` shows a user key its own
lines only and the admin every key's; ``/admin/usage/series`` buckets requests, tokens, errors and
latency/TTFT percentiles by model and by key; ``/services`` carries each replica's recent p50/p95.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from common.auth import AuthSettings, new_secret
from gateway.app import create_app
from gateway.settings import GatewaySettings
from model_registry.app import create_app as create_registry
from tests.helpers.model_registry import registry_settings
from tests.helpers.polling import eventually
from tests.helpers.servers import serve
from tests.helpers.stub_worker import StubWorker

ADMIN_KEY, SERVICE_TOKEN = new_secret(), new_secret()
AUTH = AuthSettings(_env_file=None, auth=True, admin_key=ADMIN_KEY, service_token=SERVICE_TOKEN)
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
MODEL = "acme/tiny"


@asynccontextmanager
async def console_gateway(home: Path, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    settings = GatewaySettings(_env_file=None, keys_file=home / "keys.json", usage_log=home / "usage.log",
                               probe_interval_s=60.0, **overrides)
    app = create_app(settings, auth=AUTH)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw",
                                     timeout=30) as client:
            yield client


def model_folder(root: Path, marker: str) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_type": "bert", "marker": marker}))
    (root / "model.safetensors").write_bytes(marker.encode() * 1000)
    return root


async def import_through_gateway(client: httpx.AsyncClient, folder: Path) -> str:
    job = await client.post(f"/admin/store/models/{MODEL}/import", headers=ADMIN,
                            json={"path": str(folder), "model_type": "embedding"})
    assert job.status_code == 202, job.text

    async def finished() -> dict[str, Any] | None:
        jobs = (await client.get("/admin/store", headers=ADMIN)).json()["jobs"]
        found = next(j for j in jobs if j["id"] == job.json()["id"])
        return found if found["state"] in ("done", "failed") else None

    done = await eventually(finished, "the import job to finish", within_s=30)
    assert done["state"] == "done", done
    return done["resolved_revision"]


async def test_store_changes_go_through_the_gateway_and_a_served_revision_is_kept(tmp_path: Path) -> None:
    registry = create_registry(registry_settings("local", tmp_path), auth=AUTH)
    async with serve(registry) as registry_url, StubWorker(MODEL, model_type="embedding") as worker, \
            console_gateway(tmp_path, model_registry_url=registry_url, workers=[worker.url]) as client:
        user = (await client.post("/admin/keys", headers=ADMIN, json={"name": "u"})).json()["key"]
        refused = await client.post(f"/admin/store/models/{MODEL}/import", json={"path": str(tmp_path)},
                                    headers={"authorization": f"Bearer {user}"})
        assert refused.status_code == 403
        first = await import_through_gateway(client, model_folder(tmp_path / "v1", "one"))
        second = await import_through_gateway(client, model_folder(tmp_path / "v2", "two"))
        store = (await client.get("/admin/store", headers=ADMIN)).json()
        record = next(m for m in store["models"] if m["id"] == MODEL)
        assert record["current"] == second and {r["revision"] for r in record["revisions"]} == {first, second}
        assert store["served"] == {MODEL: [worker.url]}

        rollback = await client.put(f"/admin/store/models/{MODEL}/aliases/current", headers=ADMIN,
                                    json={"revision": first})
        assert rollback.status_code == 200 and rollback.json()["aliases"]["current"] == first

        kept = await client.delete(f"/admin/store/models/{MODEL}/revisions/{first}", headers=ADMIN)
        assert kept.status_code == 409 and kept.json()["error"]["code"] == "revision_in_use"
        assert worker.url in kept.json()["error"]["message"]
        gone = await client.delete(f"/admin/store/models/{MODEL}/revisions/{second}", headers=ADMIN)
        assert gone.status_code == 200 and gone.json()["deleted"] is True
        unknown = await client.delete(f"/admin/store/models/{MODEL}/revisions/{second}", headers=ADMIN)
        assert unknown.status_code == 404  # the registry's own answer, passed on
        record = (await client.get("/admin/store", headers=ADMIN)).json()["models"][0]
        assert [r["revision"] for r in record["revisions"]] == [first]


def line(moment: str, key: str, model: str, status: int = 200, latency: float = 10.0,
         ttft: float | None = None, tokens: int = 5) -> str:
    return json.dumps({"time": moment, "request_id": moment, "key_id": key, "model": model, "status": status,
                       "endpoint": "/v1/chat/completions", "total_tokens": tokens, "latency_ms": latency,
                       "ttft_ms": ttft}) + "\n"


async def test_usage_series_by_model_and_key_and_my_usage_is_my_own(tmp_path: Path) -> None:
    async with console_gateway(tmp_path) as client:
        made = (await client.post("/admin/keys", headers=ADMIN, json={"name": "mine"})).json()
        mine, own = {"authorization": f"Bearer {made['key']}"}, made["id"]
        lines = [line("2026-01-01T00:00:05.000Z", own, "chat", latency=10, ttft=2),
                 line("2026-01-01T00:00:20.000Z", own, "chat", latency=30, ttft=4),
                 line("2026-01-01T00:00:40.000Z", "other", "chat", status=500, latency=90),
                 line("2026-01-01T00:01:10.000Z", "other", "embed", tokens=7)]
        with (tmp_path / "usage.log").open("a") as log:
            log.write("".join(lines))
        window = "since=2026-01-01T00:00:00Z&until=2026-01-01T00:02:00Z&bucket_s=60"
        assert (await client.get(f"/admin/usage/series?{window}", headers=mine)).status_code == 403
        series = (await client.get(f"/admin/usage/series?{window}", headers=ADMIN)).json()
        assert series["buckets"] == ["2026-01-01T00:00:00.000Z", "2026-01-01T00:01:00.000Z"]
        chat = series["by_model"]["chat"]
        assert [b["requests"] for b in chat] == [3, 0] and chat[0]["errors"] == 1 and chat[0]["total_tokens"] == 15
        assert (chat[0]["latency_p50_ms"], chat[0]["latency_p95_ms"]) == (30, 90)
        assert (chat[0]["ttft_p50_ms"], chat[0]["ttft_p95_ms"]) == (2, 4)
        assert [b["requests"] for b in series["by_model"]["embed"]] == [0, 1]
        assert [b["requests"] for b in series["by_key"][own]] == [2, 0]

        me = (await client.get(f"/usage/me?{window}", headers=mine)).json()
        assert me["key_id"] == own and me["summary"]["requests"] == 2 and list(me["summary"]["by_key"]) == [own]
        assert list(me["series"]["by_key"]) == [own] and {r["key_id"] for r in me["recent"]} == {own}
        everyone = (await client.get(f"/usage/me?{window}", headers=ADMIN)).json()
        assert everyone["summary"]["requests"] == 4 and set(everyone["series"]["by_key"]) == {own, "other"}
        backwards = await client.get("/usage/me?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", headers=mine)
        assert backwards.status_code == 400 and backwards.json()["error"]["param"] == "until"


async def test_services_show_each_replicas_recent_latency(tmp_path: Path) -> None:
    async with StubWorker("chat") as worker, console_gateway(tmp_path, workers=[worker.url]) as client:
        before = (await client.get("/services", headers=ADMIN)).json()["data"][0]["recent"]
        assert before == {"p50_ms": None, "p95_ms": None, "requests_per_s": 0.0}
        for _ in range(3):
            answer = await client.post("/v1/chat/completions", headers=ADMIN,
                                       json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
            assert answer.status_code == 200, answer.text
        recent = (await client.get("/services", headers=ADMIN)).json()["data"][0]["recent"]
    assert recent["requests_per_s"] == 0.05 and 0 < recent["p50_ms"] <= recent["p95_ms"]
