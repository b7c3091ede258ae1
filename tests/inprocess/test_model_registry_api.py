"""Model registry HTTP API in-process (httpx ASGITransport + lifespan) over both real backends."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from model_registry.settings import ModelRegistrySettings
from tests.helpers.model_registry import registry_client, registry_settings, small_copy, wait_job
from tests.helpers.s3 import S3Server

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


async def test_import_list_get_stream_delete(backend_settings: ModelRegistrySettings, minilm_path: Path) -> None:
    async with registry_client(backend_settings) as (_, client):
        resp = await client.post(f"/models/{MODEL}/import", json={"path": str(minilm_path), "model_type": "embedding"})
        assert resp.status_code == 202, resp.text
        job = resp.json()
        again = await client.post(f"/models/{MODEL}/import", json={"path": str(minilm_path), "model_type": "embedding"})
        assert again.json()["id"] == job["id"]  # coalesced while active
        listed = (await client.get("/models")).json()["data"]
        assert [m["id"] for m in listed] == [MODEL] and listed[0]["status"] in ("downloading", "ready")
        done = await wait_job(client, job["id"])
        assert done["state"] == "done", done
        assert done["files_done"] == done["files_total"] == 13 and done["bytes_done"] == done["bytes_total"]

        [model] = (await client.get("/models")).json()["data"]
        assert model["status"] == "ready" and model["type"] == "embedding"
        assert model["aliases"]["current"] == done["resolved_revision"] == model["current"]
        assert model["size"] == folder_size(minilm_path)

        detail = (await client.get(f"/models/{MODEL}")).json()
        files = {f["path"]: f for f in detail["manifest"]["files"]}
        assert detail["manifest"]["complete"] is True and detail["revision"] == model["current"]
        expected = hashlib.sha256((minilm_path / "1_Pooling/config.json").read_bytes()).hexdigest()
        assert files["1_Pooling/config.json"]["sha256"] == expected

        rev = model["current"]
        resp = await client.get(f"/models/{MODEL}/revisions/{rev}/files/1_Pooling/config.json")
        assert resp.status_code == 200 and resp.headers["x-sha256"] == expected
        assert resp.content == (minilm_path / "1_Pooling/config.json").read_bytes()
        part = await client.get(f"/models/{MODEL}/revisions/current/files/vocab.txt", headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == (minilm_path / "vocab.txt").read_bytes()[10:20]
        assert (await client.get(f"/models/{MODEL}/revisions/{rev}/files/nope.bin")).status_code == 404
        assert (await client.get(f"/models/{MODEL}/revisions/{rev}")).json()["revision"] == rev

        metrics = (await client.get("/metrics")).text
        assert 'model_registry_jobs{state="done"} 1.0' in metrics
        stored = next(line for line in metrics.splitlines() if line.startswith("model_registry_stored_bytes "))
        assert float(stored.split()[1]) == model["size"]
        assert (await client.get("/health")).json()["status"] == "ok"

        assert (await client.delete(f"/models/{MODEL}/revisions/{rev}")).status_code == 200
        assert (await client.get(f"/models/{MODEL}")).status_code == 404
        assert (await client.get("/models")).json()["data"] == []


async def test_alias_rollback(backend_settings: ModelRegistrySettings, small_model: Path, tmp_path: Path) -> None:
    other = small_copy(small_model, tmp_path / "other")
    async with registry_client(backend_settings) as (_, client):
        for rev, folder in (("r1", small_model), ("r2", other)):
            job = (await client.post(f"/models/{MODEL}/import", json={"path": str(folder), "revision": rev})).json()
            assert (await wait_job(client, job["id"]))["state"] == "done"
        model = (await client.get(f"/models/{MODEL}")).json()
        assert model["current"] == "r2" and model["type"] == "embedding"  # guessed from modules.json
        resp = await client.put(f"/models/{MODEL}/aliases/current", json={"revision": "r1"})
        assert resp.status_code == 200 and resp.json()["aliases"]["current"] == "r1"
        served = await client.get(f"/models/{MODEL}/revisions/current/files/model.safetensors")
        assert served.content == (small_model / "model.safetensors").read_bytes()
        assert (await client.get(f"/models/{MODEL}", params={"revision": "r2"})).json()["revision"] == "r2"
        resp = await client.put(f"/models/{MODEL}/aliases/stable", json={"revision": "r9"})
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "revision_not_found"
        # Deleting the revision "current" points at moves "current" to what is left.
        assert (await client.delete(f"/models/{MODEL}/revisions/r1")).status_code == 200
        assert (await client.get(f"/models/{MODEL}")).json()["current"] == "r2"
        assert (await client.delete(f"/models/{MODEL}")).status_code == 200
        assert (await client.get("/models")).json()["data"] == []


@pytest.mark.parametrize(("method", "url", "body"), [
    ("GET", "/models/a/b/c", None),
    ("GET", "/models/bad%20id", None),
    ("GET", "/models/..%2Fetc", None),
    ("GET", "/models/_jobs", None),
    ("POST", "/models/a%5Cb/download", {}),
    ("POST", "/models/org/m/download", {"revision": "../main"}),
    ("POST", "/models/org/m/download", {"unknown": 1}),
    ("POST", "/models/org/m/import", {"path": "relative/folder"}),
    ("POST", "/models/org/m/import", {"path": "/no/such/folder"}),
    ("PUT", "/models/org/m/aliases/bad..alias", {"revision": "r1"}),
    ("GET", "/models/org/m/revisions/r1/files/a%5Cb", None),
])
async def test_bad_requests_are_400(method: str, url: str, body: dict | None, tmp_path: Path) -> None:
    async with registry_client(registry_settings("local", tmp_path)) as (_, client):
        resp = await client.request(method, url, json=body)
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["type"] == "invalid_request_error"


async def test_unknown_things_are_404(tmp_path: Path) -> None:
    async with registry_client(registry_settings("local", tmp_path)) as (_, client):
        resp = await client.get("/models/org/unknown")
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "model_not_found"
        assert (await client.delete("/models/org/unknown")).status_code == 404
        assert (await client.get("/models/org/unknown/revisions/abc/files/config.json")).status_code == 404
        assert (await client.put("/models/org/unknown/aliases/x", json={"revision": "r"})).status_code == 404
        resp = await client.get(f"/jobs/{os.urandom(16).hex()}")
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "job_not_found"
        assert (await client.get("/jobs/../../etc")).status_code == 404


async def test_gguf_import_checks_the_file_first(tmp_path: Path) -> None:
    """Bad GGUF input is a 400 at once; the conversion itself is tested in test_model_store_worker.py."""
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"nope")
    async with registry_client(registry_settings("local", tmp_path)) as (_, client):
        resp = await client.post("/models/org/m/import", json={"path": str(gguf)})
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_gguf"
        resp = await client.post("/models/org/m/import", json={"path": str(tmp_path / "missing.gguf")})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "path"
        resp = await client.post("/models/org/m/import", json={"path": "relative/model.gguf"})
        assert resp.status_code == 400


async def test_wrong_s3_secret_refuses_to_start(s3_server: S3Server, tmp_path: Path) -> None:
    settings = registry_settings("s3", tmp_path, s3_server, s3_secret_key="wrong-secret-value")
    with pytest.raises(Exception) as err:
        async with registry_client(settings):
            pass
    assert "SignatureDoesNotMatch" in str(err.value) or "InvalidAccessKeyId" in str(err.value)
    assert "wrong-secret-value" not in str(err.value)


async def test_import_roots_bound_what_an_import_may_read(tmp_path: Path) -> None:
    """With MODEL_REGISTRY_IMPORT_ROOTS set, a folder outside them (a symlink out included) is 403 and
    no job starts; a folder inside is imported."""
    root, outside = tmp_path / "imports", tmp_path / "elsewhere"
    for folder in (root / "tiny", outside):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text('{"model_type": "bert"}')
    (root / "escape").symlink_to(outside)
    settings = registry_settings("local", tmp_path / "store").model_copy(update={"import_roots": [root]})
    async with registry_client(settings) as (_, client):
        for path in ("/", str(outside), str(root / "escape"), str(root / ".." / "elsewhere")):
            resp = await client.post("/models/acme/tiny/import", json={"path": path})
            assert resp.status_code == 403, (path, resp.text)
            assert resp.json()["error"]["code"] == "path_not_allowed"
        assert (await client.get("/jobs")).json()["data"] == []
        resp = await client.post("/models/acme/tiny/import", json={"path": str(root / "tiny")})
        assert resp.status_code == 202, resp.text
        assert (await wait_job(client, resp.json()["id"]))["state"] == "done"


def test_import_roots_read_from_a_comma_separated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_REGISTRY_IMPORT_ROOTS", "/srv/models, /mnt/usb")
    assert ModelRegistrySettings(_env_file=None).import_roots == [Path("/srv/models"), Path("/mnt/usb")]
