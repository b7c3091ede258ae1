"""A worker that starts from the model store (real local folder and real SeaweedFS S3 backends).

The fake engine keeps these fast: what is under test is the start-up path (fetch into the cache,
sha256 verification, the failure reported by ``/health``), not a model. The real-model version with
the gateway and the openai SDK is ``tests/e2e/test_worker_from_store.py``. Also here: GGUF import
(a real conversion of the starter GGUF through the CLI) and the starter import ``make run`` uses.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from model_registry.catalog import Catalog, file_key
from model_registry.settings import ModelRegistrySettings
from model_registry.sources.folder import import_folder
from model_registry.storage import Storage, open_storage
from model_service.app import create_app
from model_service.settings import WorkerSettings
from tests.helpers.model_registry import registry_client, registry_env, registry_settings, wait_job

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def flip_byte(store: Storage, key: str, offset: int = 100) -> None:
    """Corrupt one stored object in place, as bit rot or a bad copy would."""
    data = bytearray(store.get_bytes(key))
    data[offset] ^= 0x01
    store.put_bytes(key, bytes(data))


@pytest.fixture
def store(backend_settings: ModelRegistrySettings, monkeypatch: pytest.MonkeyPatch) -> Storage:
    """The test's store, also exported as MODEL_REGISTRY_* so the worker opens it as a deployment would."""
    for key, value in registry_env(backend_settings).items():
        monkeypatch.setenv(key, value)
    storage = open_storage(backend_settings)
    storage.check()
    yield storage
    storage.close()


@asynccontextmanager
async def store_worker(cache: Path, **overrides: object) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.Response]]:
    """A fake-engine worker with ``model_source=store``; yields its client and its settled ``/health``."""
    values: dict[str, object] = {"model_name": MODEL, "model_type": "embedding", "engine": "fake",
                                 "model_source": "store", "cache_dir": cache, "_env_file": None}
    app = create_app(WorkerSettings(**{**values, **overrides}))  # type: ignore[arg-type]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
            deadline = time.monotonic() + 30
            health = await client.get("/health")
            while health.json().get("error", {}).get("code") == "model_loading" and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                health = await client.get("/health")
            yield client, health


async def test_worker_fetches_verifies_and_reuses_the_cache(store: Storage, small_model: Path, tmp_path: Path) -> None:
    manifest = import_folder(Catalog(store), MODEL, small_model, "embedding")
    cache = tmp_path / "cache"
    async with store_worker(cache) as (client, health):
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text
        assert (await client.post("/v1/embeddings", json={"input": "hi"})).status_code == 200
    folder = cache / MODEL / manifest.revision
    for entry in manifest.files:
        assert hashlib.sha256((folder / entry.path).read_bytes()).hexdigest() == entry.sha256
    # A second start keeps the verified files (same inode: not copied again); a file damaged in the
    # cache is noticed and fetched again from the store.
    inode = (folder / "config.json").stat().st_ino
    (folder / "model.safetensors").write_bytes(b"damaged in the cache")
    async with store_worker(cache, model_revision=manifest.revision) as (_, health):
        assert health.status_code == 200, health.text
    assert (folder / "config.json").stat().st_ino == inode
    assert (folder / "model.safetensors").read_bytes() == (small_model / "model.safetensors").read_bytes()


async def test_flipped_byte_in_the_store_refuses_to_start(store: Storage, small_model: Path, tmp_path: Path) -> None:
    manifest = import_folder(Catalog(store), MODEL, small_model, "embedding")
    flip_byte(store, file_key(MODEL, manifest.revision, "model.safetensors"))
    async with store_worker(tmp_path / "cache") as (client, health):
        assert health.status_code == 503, health.text
        error = health.json()["error"]
        assert error["code"] == "model_load_failed"
        assert "Checksum mismatch for file 'model.safetensors'" in error["message"], error
        resp = await client.post("/v1/embeddings", json={"input": "hi"})
        assert resp.status_code == 503 and "Checksum mismatch" in resp.json()["error"]["message"]
    folder = tmp_path / "cache" / MODEL / manifest.revision
    assert not (folder / "model.safetensors").exists()  # the bad copy was never kept
    assert not [p for p in folder.iterdir() if p.name.endswith(".part")]


@pytest.mark.parametrize("overrides, expected", [
    ({"model_name": "org/not-there"}, "The model 'org/not-there' is not in the registry"),
    ({"model_revision": "v9"}, "no ready revision or alias 'v9'"),
    ({"model_type": "llm"}, "stored as a 'embedding' model but this worker serves 'llm'"),
])
async def test_missing_model_revision_or_wrong_type_is_a_clear_start_failure(
        overrides: dict, expected: str, small_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = registry_settings("local", tmp_path)
    for key, value in registry_env(settings).items():
        monkeypatch.setenv(key, value)
    store = open_storage(settings)
    store.check()
    import_folder(Catalog(store), MODEL, small_model, "embedding")
    store.close()
    async with store_worker(tmp_path / "cache", **overrides) as (_, health):
        assert health.status_code == 503 and expected in health.json()["error"]["message"], health.text


async def test_store_model_id_can_differ_from_the_served_name(store: Storage, small_model: Path,
                                                              tmp_path: Path) -> None:
    import_folder(Catalog(store), MODEL, small_model, "embedding")
    async with store_worker(tmp_path / "cache", model_name="embed", store_model_id=MODEL) as (_, health):
        assert health.status_code == 200 and health.json()["model"] == "embed"


async def test_gguf_import_converts_once_and_records_its_source(tmp_path: Path, smollm_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """``model-service models import FILE.gguf`` stores a normal HF folder; the manifest names the GGUF."""
    from stack.cli import main
    from stack.starters import STARTER_LLM, package_dir

    settings = registry_settings("local", tmp_path)
    for key, value in registry_env(settings).items():
        monkeypatch.setenv(key, value)
    gguf = package_dir(STARTER_LLM.package) / str(STARTER_LLM.gguf_file)
    assert main(["models", "import", str(gguf), "--id", "org/smollm2", "--type", "llm"]) == 0
    store = open_storage(settings)
    catalog = Catalog(store)
    manifest = catalog.manifest("org/smollm2", catalog.resolve("org/smollm2"))
    assert manifest.model_type == "llm" and manifest.source["kind"] == "gguf"
    assert manifest.source["sha256"] == hashlib.sha256(gguf.read_bytes()).hexdigest()
    files = {f.path: f.sha256 for f in manifest.files}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    # Same conversion routine as the starter cache: byte-identical weights.
    assert files["model.safetensors"] == hashlib.sha256((smollm_path / "model.safetensors").read_bytes()).hexdigest()
    # Importing the same file again is a no-op on the same revision (no second conversion), via the API too.
    async with registry_client(settings) as (_, client):
        job = (await client.post("/models/org/smollm2/import", json={"path": str(gguf)})).json()
        done = await wait_job(client, job["id"], 20)
        assert done["state"] == "done" and done["resolved_revision"] == manifest.revision, done
        bad = tmp_path / "bad.gguf"
        bad.write_bytes(b"not a gguf")
        resp = await client.post("/models/org/bad/import", json={"path": str(bad)})
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_gguf"
        resp = await client.post("/models/org/bad/import", json={"path": str(gguf), "model_type": "embedding"})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "model_type"
    store.close()


def test_import_starters_is_idempotent(tmp_path: Path, smollm_path: Path, minilm_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from model_registry.ingest import RevisionWriter
    from stack.starters import STARTERS, import_starters

    store = open_storage(registry_settings("local", tmp_path))
    store.check()
    revisions = import_starters(store)
    assert set(revisions) == {s.model_id for s in STARTERS}
    catalog = Catalog(store)
    for starter in STARTERS:
        assert catalog.resolve(starter.model_id) == revisions[starter.model_id]
        assert catalog.get_model(starter.model_id).type == starter.model_type
    before = stored_files(tmp_path / "store")
    writes: list[str] = []
    for name in ("store_file", "store_stream"):  # count (and still do) every file the import stores
        monkeypatch.setattr(RevisionWriter, name, counting(getattr(RevisionWriter, name), writes))
    assert import_starters(store) == revisions
    assert writes == []  # nothing read, hashed or copied again
    assert stored_files(tmp_path / "store") == before
    store.close()


def stored_files(root: Path) -> dict[Path, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def counting(method, calls: list[str]):
    """``method`` that also records the store path of each call."""
    def wrapper(self, path: str, *args, **kwargs):
        calls.append(path)
        return method(self, path, *args, **kwargs)
    return wrapper
