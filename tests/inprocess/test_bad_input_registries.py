"""Bad input to both registries: the right status and OpenAI's error shape, and nothing touched.

Requests whose paths must reach the model registry exactly as sent (``..`` segments, which HTTP clients
normalise away) go to the ASGI app directly, as a server hands them over; after each one, the store and
a folder beside it must be byte for byte what they were.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pydantic import ValidationError

from model_registry.app import create_app as create_model_registry
from model_registry.settings import ModelRegistrySettings
from service_registry.app import create_app as create_service_registry
from service_registry.settings import RegistrySettings
from tests.helpers.http import JSON, MAX_BODY, asgi_request, assert_invalid_request
from tests.helpers.model_registry import wait_job
from tests.helpers.polling import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")


# --- model registry: paths that try to leave the store --------------------------------------------


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def model_registry(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, Any]]:
    """A registry on a local store holding one small model, beside a folder it must never touch."""
    base = tmp_path_factory.mktemp("traversal")
    (base / "outside").mkdir()
    (base / "outside" / "secret.txt").write_text("keep me")
    source = base / "source"
    source.mkdir()
    (source / "config.json").write_text('{"model_type": "bert"}')
    (source / "weights.bin").write_bytes(b"\1" * 1000)
    app = create_model_registry(ModelRegistrySettings(_env_file=None, storage_backend="local",
                                                      local_root=base / "store", max_body_bytes=MAX_BODY))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://registry") as client:
            job = (await client.post("/models/org/name/import", json={"path": str(source)})).json()
            assert (await wait_job(client, job["id"]))["state"] == "done"

            async def recorded_done() -> bool:  # the job's own record is written just after it says done
                return any('"done"' in p.read_text() for p in (base / "store").rglob(f"{job['id']}.json"))

            await eventually(recorded_done, "the job's record to say done")
            yield {"app": app, "client": client, "base": base}


TRAVERSALS = [
    "/models/../outside", "/models/../../outside/secret.txt", "/models/..%2F..%2Foutside",
    "/models/%2e%2e%2f%2e%2e%2foutside%2fsecret.txt", "/models/org/../../outside", "/models/org/..%2F..%2Fstore",
    "/models//etc/passwd", "/models/%2Fetc%2Fpasswd", "/models/org%5C..%5C..%5Coutside", "/models/org\\..\\outside",
    "/models/org/name%00", "/models/org/na%00me/../name",
    "/models/org/name/revisions/..", "/models/org/name/revisions/%2e%2e%2f%2e%2e",
    "/models/org/name/revisions/current/files/../../../../../outside/secret.txt",
    "/models/org/name/revisions/current/files/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/outside/secret.txt",
    "/models/org/name/revisions/current/files//etc/passwd",
    "/models/org/name/revisions/current/files/..%5C..%5Cconfig.json",
    "/models/org/name/revisions/current/files/config.json%00.txt",
    "/models/org/name/../name/revisions/current/files/config.json",
]


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("path", TRAVERSALS)
async def test_model_registry_paths_that_leave_the_store_are_refused(model_registry: dict[str, Any], method: str,
                                                                     path: str) -> None:
    base: Path = model_registry["base"]
    before = tree(base)
    resp = await asgi_request(model_registry["app"], method, path)
    assert resp.status_code in (400, 404, 405), resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    assert tree(base) == before  # nothing outside, and nothing inside, was read into place or removed


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/models/..%2Foutside/download", {}),
    ("POST", "/models/org/name/download", {"revision": "../../outside"}),
    ("POST", "/models/org/name/download", {"revision": "a\x00b"}),
    ("PUT", "/models/org/name/aliases/%2e%2e", {"revision": "current"}),
    ("PUT", "/models/org/name/aliases/current", {"revision": "../../outside"}),
    ("POST", "/models/org/..%2F..%2Foutside/import", {"path": "/nonexistent"}),
    ("POST", "/models/org/name2/import", {"path": "../outside"}),
    ("POST", "/models/org/name2/import", {"path": "/nonexistent\x00/x"}),
])
async def test_model_registry_writes_with_escaping_ids_are_400(model_registry: dict[str, Any], method: str, path: str,
                                                              body: dict[str, Any]) -> None:
    base: Path = model_registry["base"]
    before = tree(base)
    resp = await asgi_request(model_registry["app"], method, path, json.dumps(body).encode())
    assert resp.status_code == 400, resp.text
    assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
    assert tree(base) == before


async def test_the_stored_model_is_intact_after_the_attempts(model_registry: dict[str, Any]) -> None:
    client: httpx.AsyncClient = model_registry["client"]
    resp = await client.get("/models/org/name/revisions/current/files/config.json")
    assert resp.status_code == 200 and resp.content == b'{"model_type": "bert"}'
    assert (model_registry["base"] / "outside" / "secret.txt").read_text() == "keep me"


@pytest.mark.parametrize(("case", "body", "headers", "status", "code"), [
    ("malformed", b"{", JSON, 400, "invalid_json"),
    ("non-utf8", b'{"revision": "\xff"}', JSON, 400, "invalid_json"),
    ("array", b"[]", JSON, 400, "invalid_json"),
    ("text/plain", b"{}", {"content-type": "text/plain"}, 415, "unsupported_media_type"),
    ("huge", b'{"allow_patterns": ["' + b"x" * MAX_BODY + b'"]}', JSON, 413, "payload_too_large"),
])
async def test_model_registry_bad_bodies(model_registry: dict[str, Any], case: str, body: bytes,
                                         headers: dict[str, str], status: int, code: str) -> None:
    resp = await model_registry["client"].post("/models/org/name/download", content=body, headers=headers)
    assert_invalid_request(resp, status, code=code)


# --- service registry --------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def service_registry() -> AsyncIterator[httpx.AsyncClient]:
    app = create_service_registry(RegistrySettings(_env_file=None, poll_interval_s=60.0, max_body_bytes=MAX_BODY))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://registry") as client:
            yield client


GOOD_REGISTRATION = {"url": "http://127.0.0.1:9", "models": ["m"], "type": "llm"}


@pytest.mark.parametrize(("case", "body", "headers", "status", "code", "param"), [
    ("malformed", b'{"url": ', JSON, 400, "invalid_json", None),
    ("non-utf8", b'{"url": "http://\xff"}', JSON, 400, "invalid_json", None),
    ("array", b"[]", JSON, 400, "invalid_json", None),
    ("text/plain", json.dumps(GOOD_REGISTRATION).encode(), {"content-type": "text/plain"}, 415,
     "unsupported_media_type", None),
    ("huge", json.dumps({**GOOD_REGISTRATION, "models": ["m" * MAX_BODY]}).encode(), JSON, 413, "payload_too_large",
     None),
    ("models not a list", json.dumps({**GOOD_REGISTRATION, "models": "m"}).encode(), JSON, 400, "invalid_value",
     "models"),
    ("url with NUL", json.dumps({**GOOD_REGISTRATION, "url": "http://a\x00b"}).encode(), JSON, 400, "invalid_value",
     "url"),
    ("unknown field", json.dumps({**GOOD_REGISTRATION, "colour": "red"}).encode(), JSON, 400, "invalid_value",
     "colour"),
])
async def test_service_registry_bad_registrations(service_registry: httpx.AsyncClient, case: str, body: bytes,
                                                  headers: dict[str, str], status: int, code: str,
                                                  param: str | None) -> None:
    resp = await service_registry.post("/register", content=body, headers=headers)
    assert_invalid_request(resp, status, code=code, param=param)
    assert (await service_registry.get("/services")).json()["data"] == []


@pytest.mark.parametrize("path", ["/register/..%2F..%2Fx/heartbeat", "/register/%2e%2e", "/register/a%00b"])
async def test_service_registry_unknown_ids_with_dot_dot_are_404(service_registry: httpx.AsyncClient,
                                                                 path: str) -> None:
    method = "POST" if path.endswith("/heartbeat") else "DELETE"
    resp = await service_registry.request(method, path)
    assert_invalid_request(resp, 404, code="service_not_found", param="id")


async def test_a_static_upstream_url_with_a_nul_is_refused_at_start_up() -> None:
    """The registry refuses such a configuration when it starts, naming the entry, rather than polling
    around a URL no request could use."""
    upstreams = [{"id": "bad", "base_url": "http://a\x00b", "models": ["x"]},
                 {"id": "good", "base_url": "http://127.0.0.1:9", "models": ["fake-llm"]}]
    with pytest.raises(ValidationError, match=r"static_upstreams\.0\.base_url"):
        RegistrySettings(_env_file=None, poll_interval_s=0.1, static_upstreams=upstreams)
