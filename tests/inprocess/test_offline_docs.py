"""``/docs`` and ``/redoc`` on all four services load every script and style from the service itself.

Air-gapped sites have no CDN; FastAPI's default pages would stay blank there. Each page's ``src`` and
``href`` URLs are read out of the HTML, must be local paths, and must answer 200 without a key while
keys are on (the docs are open like ``/openapi.json``); ReDoc's bundle no longer names its vendor's
CDN. Chromium renders both pages offline in tests/e2e/test_console.py.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from common.auth import AuthSettings, new_secret
from gateway.app import create_app as create_gateway
from gateway.settings import GatewaySettings
from model_registry.app import create_app as create_model_registry
from model_registry.settings import ModelRegistrySettings
from model_service.app import create_app as create_worker
from model_service.settings import WorkerSettings
from service_registry.app import create_app as create_service_registry
from service_registry.settings import RegistrySettings

AUTH = AuthSettings(_env_file=None, auth=True, admin_key=new_secret(), service_token=new_secret())
ASSET = re.compile(r'(?:src|href)="([^"]+)"')
SERVICES = ["gateway", "service registry", "model registry", "worker"]


def make_app(name: str, tmp_path: Path) -> FastAPI:
    if name == "gateway":
        return create_gateway(GatewaySettings(_env_file=None, keys_file=tmp_path / "keys.json",
                                              usage_log=tmp_path / "usage.log"), auth=AUTH)
    if name == "service registry":
        return create_service_registry(RegistrySettings(_env_file=None), auth=AUTH)
    if name == "model registry":
        return create_model_registry(ModelRegistrySettings(_env_file=None, storage_backend="local",
                                                           local_root=tmp_path / "store"), auth=AUTH)
    return create_worker(WorkerSettings(_env_file=None, engine="fake", model_name="tiny", model_type="llm"),
                         auth=AUTH)


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
            yield client


@pytest.mark.parametrize("name", SERVICES)
async def test_docs_pages_load_their_assets_locally(tmp_path: Path, name: str) -> None:
    async with running(make_app(name, tmp_path)) as client:
        for page, needed in (("/docs", {"swagger-ui-bundle.js", "swagger-ui.css"}),
                             ("/redoc", {"redoc.standalone.js"})):
            resp = await client.get(page)
            assert resp.status_code == 200, f"{name} {page}: {resp.text}"
            assert "default-src 'self'" in resp.headers["content-security-policy"]
            urls = ASSET.findall(resp.text)
            assert needed <= {u.rsplit("/", 1)[-1] for u in urls}, f"{name} {page}: {urls}"
            assert "//" not in resp.text, f"{name} {page} names a host"
            for url in urls:
                assert url.startswith("/"), f"{name} {page} loads {url} from elsewhere"
                asset = await client.get(url)
                assert asset.status_code == 200 and len(asset.content) > 1000, f"{name} {url}: {asset.status_code}"
                if url.endswith("redoc.standalone.js"):
                    assert b"cdn.redoc.ly" not in asset.content
        # Keys on: the asset prefix is open, a path that merely starts like it is not.
        assert (await client.get("/docs/assetsx")).status_code in (401, 404)
        assert (await client.get("/openapi.json")).status_code == 200
