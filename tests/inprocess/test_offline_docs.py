"""``/docs`` and ``/redoc`` on all four services load every script and style from the service itself.

Air-gapped sites have no CDN; FastAPI's default pages would stay blank there. Each page's ``src`` and
``href`` URLs are read out of the HTML, must be local paths, and must answer 200 without a key while
keys are on (the docs are open like ``/openapi.json``). Chromium renders ``/docs`` offline in
tests/e2e/test_console.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI

from common.auth import AuthSettings, new_secret
from gateway.app import create_app as create_gateway
from gateway.settings import GatewaySettings
from model_registry.app import create_app as create_model_registry
from service_registry.app import create_app as create_service_registry
from service_registry.settings import RegistrySettings
from tests.inprocess.test_auth_services import running, worker_app
from tests.s3_server import registry_settings

AUTH = AuthSettings(_env_file=None, auth=True, admin_key=new_secret(), service_token=new_secret())
ASSET = re.compile(r'(?:src|href)="([^"]+)"')


def apps(tmp_path: Path) -> dict[str, FastAPI]:
    return {
        "gateway": create_gateway(GatewaySettings(_env_file=None, keys_file=tmp_path / "keys.json",
                                                  usage_log=tmp_path / "usage.log"), auth=AUTH),
        "service registry": create_service_registry(RegistrySettings(_env_file=None), auth=AUTH),
        "model registry": create_model_registry(registry_settings("local", tmp_path), auth=AUTH),
        "worker": worker_app(AUTH),
    }


@pytest.mark.parametrize("name", ["gateway", "service registry", "model registry", "worker"])
async def test_docs_pages_load_their_assets_locally(tmp_path: Path, name: str) -> None:
    app = apps(tmp_path)[name]
    async with running(app) as client:
        for page, needed in (("/docs", {"swagger-ui-bundle.js", "swagger-ui.css"}),
                             ("/redoc", {"redoc.standalone.js"})):
            resp = await client.get(page)
            assert resp.status_code == 200, f"{name} {page}: {resp.text}"
            urls = ASSET.findall(resp.text)
            assert needed <= {u.rsplit("/", 1)[-1] for u in urls}, f"{name} {page}: {urls}"
            assert "//" not in resp.text.replace("http://www.w3.org", ""), f"{name} {page} names a host"
            for url in urls:
                assert url.startswith("/"), f"{name} {page} loads {url} from elsewhere"
                asset = await client.get(url)
                assert asset.status_code == 200 and len(asset.content) > 1000, f"{name} {url}: {asset.status_code}"
        # Keys on: the assets are open, nothing else under the prefix's neighbours is.
        assert (await client.get("/docs/assetsx")).status_code in (401, 404)
