"""A gateway with auth on in front of fake-engine workers, all on real loopback HTTP.

Workers and gateway share one :class:`AuthSettings`, as one ``.env`` would give them, so the gateway
must send the service token to reach a worker at all. The key file and usage log live in the test's
temporary folder.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from common.auth import AuthSettings
from gateway.app import create_app
from gateway.deps import GatewayState
from gateway.settings import GatewaySettings
from tests.helpers.servers import serve
from tests.helpers.workers import worker

ADMIN_KEY = "adm-" + "Qz81vTn4" * 4
SERVICE_TOKEN = "svc-" + "Lw27pKx9" * 4
PROMPT = [{"role": "user", "content": "the quick brown fox jumps"}]


def auth_on() -> AuthSettings:
    return AuthSettings(_env_file=None, auth=True, admin_key=ADMIN_KEY, service_token=SERVICE_TOKEN)


def auth_off() -> AuthSettings:
    return AuthSettings(_env_file=None, auth=False)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


ADMIN = bearer(ADMIN_KEY)
SERVICE = bearer(SERVICE_TOKEN)


@asynccontextmanager
async def authed_worker(name: str, model_type: str = "llm", auth: AuthSettings | None = None,
                        **knobs: Any) -> AsyncIterator[str]:
    """A fake-engine worker behind the same auth as the gateway; yields its URL once ready."""
    async with worker(name, model_type, auth or auth_on(), **knobs) as (url, _):
        yield url


@asynccontextmanager
async def keyed_gateway(home: Path, workers: list[str], auth: AuthSettings | None = None,
                        **overrides: Any) -> AsyncIterator[tuple[str, GatewayState, FastAPI]]:
    """The gateway on loopback, its key file and usage log under ``home``."""
    options: dict[str, Any] = {"workers": workers, "probe_interval_s": 60.0, "probe_timeout_s": 2.0,
                               "connect_timeout_s": 2.0, "read_timeout_s": 10.0, "_env_file": None,
                               "keys_file": home / "keys.json", "usage_log": home / "usage.log"}
    options.update(overrides)
    app = create_app(GatewaySettings(**options), auth=auth or auth_on())
    async with serve(app) as url:
        yield url, app.state.gateway, app


async def create_key(url: str, **body: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=10) as client:
        resp = await client.post("/admin/keys", json=body, headers=ADMIN)
    assert resp.status_code == 201, resp.text
    return resp.json()


async def scrape(url: str, headers: dict[str, str]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` as {(sample name, sorted labels): value}."""
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        resp = await client.get(f"{url}/metrics", headers=headers)
    assert resp.status_code == 200, resp.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(resp.text) for s in family.samples}


async def worker_requests(url: str, endpoint: str) -> float:
    """How many requests the worker itself answered on ``endpoint`` (its own request counter)."""
    samples = await scrape(url, SERVICE)
    return sum(value for (name, labels), value in samples.items()
               if name.endswith("requests_total") and endpoint in dict(labels).values())
