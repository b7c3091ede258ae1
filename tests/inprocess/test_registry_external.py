"""Static external upstreams: probed at ``{base}/models`` with the configured bearer key, never leaked.

The upstream is a tiny OpenAI-compatible app that insists on one API key, served on real loopback HTTP.
"""

from __future__ import annotations

import httpx
from fastapi import FastAPI, Header, HTTPException

from service_registry.client import RegistryClient
from tests.helpers.polling import eventually
from tests.helpers.ports import free_port
from tests.helpers.servers import registry_app, serve, status_is

KEY = "sk-upstream-secret-4242"
WRONG = "sk-wrong-key-9999"


def upstream_app(seen: list[str | None]) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def models(authorization: str | None = Header(default=None)) -> dict:
        seen.append(authorization)
        if authorization != f"Bearer {KEY}":
            raise HTTPException(401, "bad key")
        return {"object": "list", "data": [{"id": "upstream-llm", "object": "model"}]}

    return app


async def test_external_upstream_with_right_and_wrong_key() -> None:
    seen: list[str | None] = []
    async with serve(upstream_app(seen), free_port()) as upstream:
        statics = [
            {"id": "ext-good", "base_url": upstream, "api_key": KEY, "models": {"big": "upstream-llm"}},
            {"id": "ext-bad", "base_url": f"{upstream}/v1", "api_key": WRONG, "models": ["big"], "priority": 90},
            {"id": "ext-none", "base_url": upstream, "models": ["big"]},
        ]
        async with (serve(registry_app(static_upstreams=statics), free_port()) as registry_url,
                    RegistryClient(registry_url) as client):
            good = await eventually(status_is(client, "ext-good", "healthy"), "right key healthy")
            bad = await eventually(status_is(client, "ext-bad", "unhealthy"), "wrong key unhealthy")
            none = await eventually(status_is(client, "ext-none", "unhealthy"), "no key unhealthy")
            assert good.kind == "external" and good.api_base == f"{upstream}/v1" and good.priority == 100
            assert good.upstream_model("big") == "upstream-llm" and good.has_api_key
            assert "authentication failed" in (bad.reason or "") and "refused" in (bad.reason or "")
            assert "none is configured" in (none.reason or "") and not none.has_api_key
            assert f"Bearer {KEY}" in seen and f"Bearer {WRONG}" in seen and None in seen
            assert [s.id for s in (await client.services()).serving("big")] == ["ext-good"]

            async with httpx.AsyncClient(base_url=registry_url, trust_env=False, timeout=5) as http:
                deleted = await http.delete("/register/ext-good")
                assert deleted.status_code == 409 and deleted.json()["error"]["code"] == "conflict"
                taken = await http.post("/register", json={"id": "ext-good", "url": upstream, "models": ["x"],
                                                           "type": "llm"})
                assert taken.status_code == 409
                bodies = [(await http.get(path)).text for path in
                          ("/services", "/services/ext-good", "/services/ext-bad", "/gpu-stats", "/health",
                           "/metrics", "/openapi.json")]
            for body in bodies:
                assert KEY not in body and WRONG not in body
            assert "ext-good" in bodies[0] and "ext-" not in bodies[3]  # externals report no GPUs
