"""Model registry jobs across a restart: a job whose process died is resumed (stored files re-verified)
or cleaned up, and a partial revision is never listed as ready."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path

import pytest

import model_registry.jobs as jobs_module
from model_registry.catalog import Catalog, file_key
from model_registry.fetch import fetch_model
from model_registry.ingest import RevisionWriter
from model_registry.records import JobRecord
from model_registry.settings import ModelRegistrySettings
from model_registry.sources.folder import folder_files, folder_fingerprint
from model_registry.storage import Storage, open_storage
from tests.helpers.model_registry import registry_client, wait_job

MODEL = "org/small-model"


def simulate_dead_import(store: Storage, folder: Path) -> tuple[str, str]:
    """What a registry killed mid-import leaves: some files (one corrupt), no manifest, a running job."""
    revision = folder_fingerprint(folder_files(folder))
    store.put_bytes(file_key(MODEL, revision, "config.json"), (folder / "config.json").read_bytes())
    store.put_bytes(file_key(MODEL, revision, "model.safetensors"), b"half-written garbage")
    store.put_bytes(file_key(MODEL, revision, "vocab.txt"), b"x" * (folder / "vocab.txt").stat().st_size)
    job = JobRecord(id=uuid.uuid4().hex, kind="import", model_id=MODEL, revision=revision,
                    resolved_revision=revision, state="running", files_done=2, params={"path": str(folder)})
    store.put_json(f"_jobs/{job.id}.json", job.model_dump())
    return job.id, revision


def open_store(settings: ModelRegistrySettings) -> Storage:
    store = open_storage(settings)
    store.check()
    return store


async def test_restart_resumes_and_reverifies(backend_settings: ModelRegistrySettings, small_model: Path,
                                              tmp_path: Path) -> None:
    store = open_store(backend_settings)
    job_id, revision = simulate_dead_import(store, small_model)
    assert Catalog(store).list_models() == []
    async with registry_client(backend_settings) as (_, client):
        job = await wait_job(client, job_id)
        assert job["state"] == "done" and job["resumed"] == 1, job
        [model] = (await client.get("/models")).json()["data"]
        assert model["id"] == MODEL and model["current"] == revision and model["status"] == "ready"
    for name in ("model.safetensors", "vocab.txt", "config.json"):  # the corrupt partial files were replaced
        assert store.sha256(file_key(MODEL, revision, name)) == hashlib.sha256(
            (small_model / name).read_bytes()).hexdigest()
    fetched = fetch_model(store, MODEL, None, tmp_path / "cache")
    assert (fetched / "model.safetensors").read_bytes() == (small_model / "model.safetensors").read_bytes()
    assert store.get_json(f"_jobs/{job_id}.json")["state"] == "done"
    store.close()


async def test_restart_without_resume_cleans_up(backend_settings: ModelRegistrySettings, small_model: Path) -> None:
    store = open_store(backend_settings)
    job_id, revision = simulate_dead_import(store, small_model)
    settings = backend_settings.model_copy(update={"resume_jobs": False})
    async with registry_client(settings) as (_, client):
        job = (await client.get(f"/jobs/{job_id}")).json()
        assert job["state"] == "failed" and "restart" in job["error"]
        assert (await client.get("/models")).json()["data"] == []
        assert (await client.get(f"/models/{MODEL}/revisions/{revision}/files/config.json")).status_code == 404
    assert store.list(f"{MODEL}/revisions/{revision}/") == []
    store.close()


async def test_restart_with_vanished_source_cleans_up(backend_settings: ModelRegistrySettings, small_model: Path,
                                                      tmp_path: Path) -> None:
    folder = shutil.copytree(small_model, tmp_path / "gone")
    store = open_store(backend_settings)
    job_id, _ = simulate_dead_import(store, folder)
    shutil.rmtree(folder)
    async with registry_client(backend_settings) as (_, client):
        assert (await client.get(f"/jobs/{job_id}")).json()["state"] == "failed"
        assert (await client.get("/models")).json()["data"] == []
    assert store.list(f"{MODEL}/revisions/") == []
    store.close()


async def test_failed_import_leaves_nothing(backend_settings: ModelRegistrySettings, small_model: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A job that fails mid-way (after storing a file) is marked failed and its partial revision deleted."""
    def half_import(catalog: Catalog, model_id: str, folder: Path, *args: object, revision: str, **kw: object):
        writer = RevisionWriter(catalog, model_id, revision)
        writer.store_file("config.json", Path(folder) / "config.json")
        raise OSError("disk on fire")

    monkeypatch.setattr(jobs_module, "import_folder", half_import)
    async with registry_client(backend_settings) as (app, client):
        job = (await client.post(f"/models/{MODEL}/import", json={"path": str(small_model)})).json()
        done = await wait_job(client, job["id"])
        assert done["state"] == "failed" and "disk on fire" in done["error"]
        assert (await client.get("/models")).json()["data"] == []
        assert app.state.model_registry.store.list(f"{MODEL}/revisions/") == []
