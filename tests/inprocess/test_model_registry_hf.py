"""Model registry's Hugging Face source against a local fake Hub (a real HTTP server speaking the
endpoints huggingface_hub 2.4 calls: ``/api/models/{repo}/revision/{rev}?blobs=true`` and
``/{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag`` and ``Content-Length``)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from model_registry.catalog import Catalog, file_key
from model_registry.fetch import fetch_model
from model_registry.records import JobRecord
from model_registry.settings import ModelRegistrySettings
from model_registry.sources.hf import HubConfig, download_hf
from model_registry.storage import open_storage
from tests.helpers.model_registry import registry_client, registry_settings, wait_job
from tests.helpers.servers import serve_in_thread

REPO = "acme/tiny-model"
TOKEN = "hf_fake_token_123"
SHA_MAIN = hashlib.sha1(b"main").hexdigest()
SHA_V1 = hashlib.sha1(b"v1").hexdigest()


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeHub:
    """One repo with two commits; records every request; can serve corrupted bytes on purpose."""

    commits: dict[str, dict[str, bytes]]
    refs: dict[str, str]
    lfs: set[str]
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    corrupt: set[str] = field(default_factory=set)
    url: str = ""

    def sibling(self, path: str, data: bytes) -> dict:
        entry = {"rfilename": path, "size": len(data), "blobId": git_blob_id(data)}
        if path in self.lfs:
            entry["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
        return entry

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        self.requests.append((request.method, path + ("?" + request.url.query if request.url.query else ""),
                              request.headers.get("authorization")))
        prefix = f"/api/models/{REPO}/revision/"
        if path.startswith("/api/models/"):
            if not path.startswith(prefix):
                return JSONResponse({"error": "Repository not found"}, 404, headers={"X-Error-Code": "RepoNotFound"})
            sha = self.refs.get(path[len(prefix):])
            if sha is None:
                return JSONResponse({"error": "Invalid rev id"}, 404, headers={"X-Error-Code": "RevisionNotFound"})
            files = self.commits[sha]
            return JSONResponse({"id": REPO, "sha": sha, "private": False,
                                 "siblings": [self.sibling(p, d) for p, d in files.items()]})
        resolve = f"/{REPO}/resolve/"
        if path.startswith(resolve):
            rev, _, name = path[len(resolve):].partition("/")
            sha = self.refs.get(rev)
            if sha is None or name not in self.commits[sha]:
                return Response(status_code=404, headers={"X-Error-Code": "EntryNotFound"})
            data = self.commits[sha][name]
            etag = hashlib.sha256(data).hexdigest() if name in self.lfs else git_blob_id(data)
            if name in self.corrupt:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            return Response(data, headers={"X-Repo-Commit": sha, "ETag": f'"{etag}"',
                                           "Content-Type": "application/octet-stream"})
        return Response(status_code=404)


def make_hub() -> FakeHub:
    weights = bytes(range(256)) * 2048  # 512 KiB, an "LFS" file
    main = {"config.json": json.dumps({"model_type": "llama"}).encode(), "model.safetensors": weights,
            "README.md": b"# tiny\n", "tokenizer.json": b'{"version": "1.0"}'}
    v1 = {**main, "config.json": json.dumps({"model_type": "llama", "old": True}).encode()}
    refs = {"main": SHA_MAIN, SHA_MAIN: SHA_MAIN, "v1": SHA_V1, SHA_V1: SHA_V1}
    return FakeHub(commits={SHA_MAIN: main, SHA_V1: v1}, refs=refs, lfs={"model.safetensors"})


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # tests/conftest.py turns it on for workers
    fake = make_hub()
    app = Starlette(routes=[Route("/{path:path}", fake.handle, methods=["GET", "HEAD"])])
    with serve_in_thread(app) as url:
        fake.url = url
        yield fake


def test_download_pins_the_commit_and_sends_the_token(hub: FakeHub, tmp_path: Path) -> None:
    store = open_storage(registry_settings("local", tmp_path))
    store.check()
    catalog = Catalog(store)
    manifest = download_hf(catalog, HubConfig(endpoint=hub.url, token=TOKEN), REPO, "main")
    assert manifest.revision == SHA_MAIN and manifest.source["commit"] == SHA_MAIN
    assert manifest.model_type == "llm"
    files = hub.commits[SHA_MAIN]
    assert {f.path: f.sha256 for f in manifest.files} == {p: hashlib.sha256(d).hexdigest() for p, d in files.items()}
    record = catalog.get_model(REPO)
    assert record.aliases == {"current": SHA_MAIN, "main": SHA_MAIN}
    # Every file request names the pinned sha, never the branch; every request carries the token.
    downloads = [path for method, path, _ in hub.requests if "/resolve/" in path]
    assert downloads and all(f"/resolve/{SHA_MAIN}/" in path for path in downloads)
    assert all(auth == f"Bearer {TOKEN}" for _, _, auth in hub.requests)
    assert any("blobs=" in path for _, path, _ in hub.requests if "/api/" in path)
    folder = fetch_model(store, REPO, "main", tmp_path / "cache")
    assert (folder / "model.safetensors").read_bytes() == files["model.safetensors"]
    # An older tag lands as its own revision; "current" follows the latest pull.
    old = download_hf(catalog, HubConfig(endpoint=hub.url, token=TOKEN), REPO, "v1")
    assert old.revision == SHA_V1 and catalog.resolve(REPO, "current") == SHA_V1
    assert catalog.resolve(REPO, "main") == SHA_MAIN


def test_allow_patterns_are_honoured(hub: FakeHub, tmp_path: Path) -> None:
    store = open_storage(registry_settings("local", tmp_path))
    store.check()
    manifest = download_hf(Catalog(store), HubConfig(endpoint=hub.url), REPO, None, "llm",
                           allow=["*.json"], ignore=["tokenizer*"])
    assert [f.path for f in manifest.files] == ["config.json"]
    assert not any("model.safetensors" in path for _, path, _ in hub.requests)
    assert all(auth is None for _, _, auth in hub.requests)  # no HF_TOKEN: nothing sent


@pytest.mark.parametrize("bad", ["model.safetensors", "config.json"])  # LFS sha256 / git blob sha1
async def test_corrupted_download_fails_the_job_and_lists_nothing(hub: FakeHub, tmp_path: Path, bad: str) -> None:
    hub.corrupt.add(bad)
    settings = registry_settings("local", tmp_path, hf_endpoint=hub.url)
    async with registry_client(settings) as (app, client):
        job = (await client.post(f"/models/{REPO}/download", json={"revision": "main"})).json()
        done = await wait_job(client, job["id"])
        assert done["state"] == "failed" and bad in done["error"] and "Checksum mismatch" in done["error"]
        assert (await client.get("/models")).json()["data"] == []
        assert await asyncio.to_thread(app.state.model_registry.store.list, f"{REPO}/revisions/") == []


async def test_download_job_via_api(backend_settings: ModelRegistrySettings, hub: FakeHub) -> None:
    settings = ModelRegistrySettings(**{**backend_settings.model_dump(), "hf_endpoint": hub.url, "hf_token": TOKEN,
                                        "_env_file": None})
    async with registry_client(settings) as (_, client):
        resp = await client.post(f"/models/{REPO}/download", json={"revision": "main", "model_type": "llm"})
        assert resp.status_code == 202
        job = resp.json()
        same = (await client.post(f"/models/{REPO}/download", json={"revision": "main", "model_type": "llm"})).json()
        assert same["id"] == job["id"]
        assert TOKEN not in resp.text
        done = await wait_job(client, job["id"])
        assert done["state"] == "done" and done["resolved_revision"] == SHA_MAIN, done
        assert done["bytes_done"] == done["bytes_total"] == sum(len(d) for d in hub.commits[SHA_MAIN].values())
        model = (await client.get(f"/models/{REPO}")).json()
        assert model["current"] == SHA_MAIN and model["aliases"]["main"] == SHA_MAIN
        assert TOKEN not in json.dumps(model) and TOKEN not in (await client.get(f"/jobs/{job['id']}")).text
        missing = (await client.post("/models/acme/nope/download")).json()  # no body: defaults
        failed = await wait_job(client, missing["id"])
        assert failed["state"] == "failed" and "RepositoryNotFoundError" in failed["error"]


async def test_interrupted_download_resumes_without_refetching_verified_files(hub: FakeHub, tmp_path: Path) -> None:
    """A dead registry left the weights stored (not the rest) and a running job: the next one re-verifies
    the stored LFS file against the Hub's sha256 instead of downloading it again."""
    settings = registry_settings("local", tmp_path, hf_endpoint=hub.url)
    store = open_storage(settings)
    store.check()
    weights = hub.commits[SHA_MAIN]["model.safetensors"]
    store.put_bytes(file_key(REPO, SHA_MAIN, "model.safetensors"), weights)
    job = JobRecord(id=uuid.uuid4().hex, kind="download", model_id=REPO, revision="main",
                    resolved_revision=SHA_MAIN, state="running")
    store.put_json(f"_jobs/{job.id}.json", job.model_dump())
    async with registry_client(settings) as (_, client):
        done = await wait_job(client, job.id)
        assert done["state"] == "done" and done["resumed"] == 1, done
        assert (await client.get(f"/models/{REPO}")).json()["current"] == SHA_MAIN
    fetched = [path for method, path, _ in hub.requests if "/resolve/" in path]
    assert fetched and not any(path.endswith("model.safetensors") for path in fetched)
