"""The registry's ONNX export: its own revision of the same model, every file with its sha256, refused
when a stored byte changes, and asked for from the CLI (``models export-onnx``) or over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import InvalidRequestError
from model_registry.catalog import Catalog, file_key
from model_registry.errors import ChecksumError
from model_registry.fetch import fetch_model
from model_registry.sources.onnx_export import ONNX_FILE, export_onnx
from model_registry.storage import file_sha256, open_storage
from model_service.engines import engine_name
from model_service.settings import WorkerSettings
from tests.helpers.model_registry import (
    check_export_route,
    flipped_byte,
    registry_client,
    registry_env,
    run_models_cli,
    use_store,
)
from tests.helpers.onnx import MODEL_ID, OnnxExports
from tests.helpers.polling import eventually
from tests.helpers.workers import worker_client_for


@pytest.fixture
def catalog(onnx_exports: OnnxExports):
    store = open_storage(onnx_exports.settings)
    yield Catalog(store)
    store.close()


def test_each_export_is_a_revision_with_sha256(onnx_exports: OnnxExports, catalog: Catalog) -> None:
    sizes = {}
    for kind, revision in onnx_exports.revisions.items():
        manifest = catalog.manifest(MODEL_ID, revision)
        files = {f.path: f for f in manifest.files}
        assert revision == f"onnx-{kind}-{onnx_exports.source}"
        assert manifest.model_type == "embedding"
        assert manifest.source["kind"] == "onnx-export" and manifest.source["from_revision"] == onnx_exports.source
        assert manifest.source["quantization"] == ("int8" if kind == "int8" else "none")
        assert {"tokenizer.json", "modules.json", "1_Pooling/config.json", ONNX_FILE} <= set(files)
        assert not [p for p in files if p.endswith((".safetensors", ".bin"))]  # only the graph runs
        for path, entry in files.items():  # what the worker fetched is what the manifest promised
            assert file_sha256(onnx_exports.folders[kind] / path) == entry.sha256
        sizes[kind] = files[ONNX_FILE].size
        assert engine_name("auto", "embedding", str(onnx_exports.folders[kind])) == "onnx"
    assert sizes["int8"] < sizes["fp32"] * 0.8
    # The export does not move ``current``; exporting again returns the stored revision.
    assert catalog.get_model(MODEL_ID).aliases["current"] == onnx_exports.source
    assert export_onnx(catalog, MODEL_ID, quantize="int8").revision == onnx_exports.revisions["int8"]
    with pytest.raises(InvalidRequestError, match="already an ONNX export"):
        export_onnx(catalog, MODEL_ID, onnx_exports.revisions["fp32"])


def test_auto_keeps_torch_for_the_torch_revision(minilm_path: Path) -> None:
    assert engine_name("auto", "embedding", str(minilm_path)) == "sentence-transformers"


def test_a_corrupted_export_is_refused(onnx_exports: OnnxExports, catalog: Catalog, tmp_path: Path) -> None:
    revision = onnx_exports.revisions["int8"]
    with flipped_byte(catalog.store, file_key(MODEL_ID, revision, ONNX_FILE)):
        with pytest.raises(ChecksumError, match=r"onnx/model\.onnx"):
            fetch_model(catalog.store, MODEL_ID, revision, tmp_path / "cache")
        assert not (tmp_path / "cache" / MODEL_ID / revision / ONNX_FILE).exists()


def test_cli_export_onnx(onnx_exports: OnnxExports, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    use_store(monkeypatch, onnx_exports.settings, tmp_path)
    code, out, _ = run_models_cli(capsys, "export-onnx", MODEL_ID, "--quantize", "int8")
    assert code == 0 and f"MODEL_REVISION={onnx_exports.revisions['int8']}" in out
    code, _, err = run_models_cli(capsys, "export-onnx", MODEL_ID, "--revision", onnx_exports.revisions["fp32"])
    assert code == 1 and err.strip().endswith("is already an ONNX export.")


async def test_http_export_job(onnx_exports: OnnxExports) -> None:
    async with registry_client(onnx_exports.settings) as (_, client):
        await check_export_route(client, MODEL_ID, "export-onnx", {"quantize": "int8"}, {"quantize": "int4"},
                                 onnx_exports.revisions["int8"])


async def test_a_worker_from_the_store_runs_the_export_on_onnx(onnx_exports: OnnxExports, catalog: Catalog,
                                                               monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``engine=auto`` with ``MODEL_REVISION`` naming the export: fetched, verified, run by ONNX Runtime;
    the same start with one stored byte changed is a clear start-up failure."""
    for key, value in registry_env(onnx_exports.settings).items():
        monkeypatch.setenv(key, value)
    revision = onnx_exports.revisions["int8"]
    settings = WorkerSettings(_env_file=None, model_name=MODEL_ID, model_type="embedding", model_source="store",
                              model_revision=revision, cache_dir=tmp_path / "cache")
    async with worker_client_for(settings) as client:
        assert client.app.state.worker.engine.info().engine == "onnx"
        resp = await client.post("/v1/embeddings", json={"input": "hello"})
        assert resp.status_code == 200 and len(resp.json()["data"][0]["embedding"]) == 384

    key = file_key(MODEL_ID, revision, ONNX_FILE)
    original = catalog.store.get_bytes(key)
    catalog.store.put_bytes(key, original[:-1] + bytes([original[-1] ^ 0x01]))
    try:
        async with worker_client_for(settings.model_copy(update={"cache_dir": tmp_path / "other"}),
                                     wait_ready=False) as client:
            async def failed() -> dict | None:
                health = await client.get("/health")
                return health.json() if health.json().get("error", {}).get("code") == "model_load_failed" else None

            error = (await eventually(failed, "the start-up to fail", within_s=60.0))["error"]
        assert "Checksum mismatch for file 'onnx/model.onnx'" in error["message"], error
    finally:
        catalog.store.put_bytes(key, original)
