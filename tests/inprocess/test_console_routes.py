"""The console's HTTP side, without a browser: ``/`` leads to ``/ui/``, the page and every asset it names
come from the gateway under a same-origin-only policy, the wheel's package data lists them, and the
recent-requests route is for the admin key only and never carries prompt text, even from a log that
keeps it. tests/e2e/test_console.py drives the pages in Chromium."""

from __future__ import annotations

import json
import re
import socket
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from common.auth import AuthSettings, new_secret
from gateway.app import create_app
from gateway.console import STATIC
from gateway.settings import GatewaySettings

ADMIN_KEY, SERVICE_TOKEN = new_secret(), new_secret()
AUTH = AuthSettings(_env_file=None, auth=True, admin_key=ADMIN_KEY, service_token=SERVICE_TOKEN)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@asynccontextmanager
async def gateway(home: Path, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway with keys on and no workers (the console's routes need none), its files under ``home``."""
    settings = GatewaySettings(_env_file=None, keys_file=home / "keys.json", usage_log=home / "usage.log",
                               **overrides)
    app = create_app(settings, auth=AUTH)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            yield client


async def test_console_page_and_assets_are_served_locally(tmp_path: Path) -> None:
    async with gateway(tmp_path) as client:
        root = await client.get("/")
        assert root.status_code == 307 and root.headers["location"] == "/ui/"
        assert (await client.get("/ui")).headers["location"] == "/ui/"
        page = await client.get("/ui/")  # open with keys on: it holds no data
        assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
        assert (await client.get("/ui/config.json")).json() == {"auth": True}
        named = re.findall(r'(?:src|href)="(static/[^"]+)"', page.text)
        modules = re.findall(r'"\./([\w-]+\.js)"', (STATIC / "app.js").read_text())
        assert "static/app.js" in named and {"overview.js", "keys.js", "usage.js", "playground.js"} <= set(modules)
        imported = re.findall(r'from "\./([\w/.-]+\.js)"', (STATIC / "models.js").read_text())
        assert {"deployment.js", "vendor/js-yaml.js"} <= set(imported + re.findall(
            r'from "\./([\w/.-]+\.js)"', (STATIC / "deployment.js").read_text()))
        for asset in named + [f"static/{m}" for m in [*modules, "deployment.js", "vendor/js-yaml.js"]]:
            resp = await client.get(f"/ui/{asset}")
            assert resp.status_code == 200 and resp.content, asset
    # No file names a host: the SVG namespace is an identifier, location.origin is the gateway itself.
    text = "".join(p.read_text() for p in STATIC.rglob("*") if p.is_file())
    assert "http" not in text.replace("http://www.w3.org/2000/svg", "").replace("${location.origin}", "")


async def test_recent_requests_are_admin_only_and_hold_no_prompt_text(tmp_path: Path) -> None:
    logged = [{"time": f"2026-01-01T00:00:0{n}.000Z", "request_id": f"r{n}", "key_id": "key_a", "model": "tiny",
               "endpoint": "/v1/chat/completions", "status": 200, "total_tokens": 9, "latency_ms": 5.0,
               "prompt": "the quick brown fox", "completion": "jumps"} for n in range(3)]
    logged.insert(1, {"time": "2026-01-01T00:00:01.500Z", "event": "key_created", "key_id": "admin"})
    (tmp_path / "usage.log").write_text("".join(json.dumps(line) + "\n" for line in logged) + "torn {\n")
    async with gateway(tmp_path) as client:
        assert (await client.get("/admin/usage/recent")).status_code == 401
        assert (await client.get("/admin/usage/recent", headers=bearer(SERVICE_TOKEN))).status_code == 403
        assert (await client.get("/admin/usage/recent?limit=0", headers=bearer(ADMIN_KEY))).status_code == 400
        recent = await client.get("/admin/usage/recent?limit=3", headers=bearer(ADMIN_KEY))
    assert recent.status_code == 200, recent.text
    rows = recent.json()["data"]
    # Newest first: this route's own two refusals (the gateway logs every refusal), then r2; no audit line.
    assert [(r["endpoint"], r["status"]) for r in rows[:2]] == [("/admin/usage/recent", 403),
                                                               ("/admin/usage/recent", 401)]
    assert rows[2]["request_id"] == "r2" and rows[2]["key_id"] == "key_a" and rows[2]["total_tokens"] == 9
    assert "quick brown fox" not in recent.text and "jumps" not in recent.text


async def test_store_route_says_when_the_model_registry_is_unset_or_unreachable(tmp_path: Path) -> None:
    async with gateway(tmp_path) as client:
        assert (await client.get("/admin/store")).status_code == 401
        assert (await client.get("/admin/store", headers=bearer(SERVICE_TOKEN))).status_code == 403
        unset = await client.get("/admin/store", headers=bearer(ADMIN_KEY))
        pull = await client.post("/admin/store/models/acme/tiny/download", headers=bearer(ADMIN_KEY))
    assert pull.status_code == 404 and pull.json()["error"]["code"] == "model_registry_not_configured"
    assert unset.json() == {"configured": False, "models": [], "jobs": [], "served": {}}
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    async with gateway(tmp_path, model_registry_url=f"http://127.0.0.1:{port}") as client:
        down = await client.get("/admin/store", headers=bearer(ADMIN_KEY))
        pull_down = await client.post("/admin/store/models/acme/tiny/download", headers=bearer(ADMIN_KEY))
    assert pull_down.status_code == 503 and "model registry did not answer" in pull_down.json()["error"]["message"]
    assert down.status_code == 503 and "model registry did not answer" in down.json()["error"]["message"]


def test_wheel_package_data_carries_the_console() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["gateway.console"]
    files = [p.relative_to(STATIC) for p in STATIC.rglob("*") if p.is_file()]
    assert all(any(Path("static", p).match(pat) for pat in patterns) for p in files)
