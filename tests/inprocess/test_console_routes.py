"""The console's HTTP side, without a browser: ``/`` leads to ``/ui/``, the page and every asset it names
come from the gateway under a same-origin-only policy, the wheel's package data lists them, and the
recent-requests route is for the admin key only and never carries prompt text, even from a log that
keeps it. tests/e2e/test_console.py drives the pages in Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from gateway.console import STATIC
from tests.inprocess.keyed_gateway import ADMIN, PROMPT, SERVICE, create_key, keyed_gateway, worker


async def test_console_page_and_assets_are_served_locally(tmp_path: Path) -> None:
    async with worker("tiny") as w, keyed_gateway(tmp_path, [w]) as (url, _, _):
        async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=10) as client:
            root = await client.get("/")
            assert root.status_code == 307 and root.headers["location"] == "/ui/"
            assert (await client.get("/ui")).headers["location"] == "/ui/"
            page = await client.get("/ui/")  # open with keys on: it holds no data
            assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
            assert (await client.get("/ui/config.json")).json() == {"auth": True}
            named = re.findall(r'(?:src|href)="(static/[^"]+)"', page.text)
            modules = re.findall(r'"\./([\w-]+\.js)"', (STATIC / "app.js").read_text())
            assert "static/app.js" in named and {"overview.js", "keys.js", "usage.js", "playground.js"} <= set(modules)
            for asset in named + [f"static/{m}" for m in modules]:
                resp = await client.get(f"/ui/{asset}")
                assert resp.status_code == 200 and resp.content, asset
            assert "http" not in "".join(p.read_text() for p in STATIC.iterdir()).replace(
                "http://www.w3.org/2000/svg", "").replace("${location.origin}", "")


async def test_recent_requests_are_admin_only_and_hold_no_prompt_text(tmp_path: Path) -> None:
    async with worker("tiny") as w, keyed_gateway(tmp_path, [w], usage_log_content=True) as (url, _, _):
        user = await create_key(url, name="reader")
        async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=10) as client:
            chat = await client.post("/v1/chat/completions", headers={"authorization": f"Bearer {user['key']}"},
                                     json={"model": "tiny", "messages": PROMPT, "max_tokens": 4})
            assert chat.status_code == 200, chat.text
            assert (await client.get("/admin/usage/recent")).status_code == 401
            for other in (SERVICE, {"authorization": f"Bearer {user['key']}"}):
                assert (await client.get("/admin/usage/recent", headers=other)).status_code == 403
            assert (await client.get("/admin/usage/recent?limit=0", headers=ADMIN)).status_code == 400
            recent = await client.get("/admin/usage/recent?limit=10", headers=ADMIN)
    assert recent.status_code == 200, recent.text
    rows = recent.json()["data"]  # newest first: the three refusals of this route, then the chat
    assert len(rows) == 4 and [r["time"] for r in rows] == sorted((r["time"] for r in rows), reverse=True)
    newest = [r for r in rows if r["endpoint"] == "/v1/chat/completions" and r["status"] == 200]
    assert newest and newest[0]["key_id"] == user["id"] and newest[0]["model"] == "tiny"
    assert "quick brown fox" in (tmp_path / "usage.log").read_text()  # the log keeps it ...
    assert "quick brown fox" not in recent.text  # ... the console does not show it


def test_wheel_package_data_carries_the_console() -> None:
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["gateway.console"]
    assert all(any(Path("static", p.name).match(pat) for pat in patterns) for p in STATIC.iterdir())
