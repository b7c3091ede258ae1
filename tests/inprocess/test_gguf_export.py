"""The registry's GGUF export with llama.cpp's real converter on the real SmolLM2: its own revision
holding one sha256-listed ``.gguf`` that ``auto`` serves on llamacpp, the 400s that refuse what cannot be
converted, nothing stored when the converter fails, and the export asked for from the CLI
(``models export-gguf``) or over HTTP (a job)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from common.errors import InvalidRequestError
from model_registry.catalog import Catalog, file_key
from model_registry.errors import ChecksumError, GgufConversionError
from model_registry.fetch import fetch_model
from model_registry.sources.folder import import_folder
from model_registry.sources.gguf import gguf_quantization
from model_registry.sources.gguf_export import export_gguf, gguf_revision
from model_registry.storage import file_sha256, open_storage
from model_service.engines import engine_name
from tests.helpers.gguf import MODEL_ID, GgufExports
from tests.helpers.model_registry import check_export_route, flipped_byte, registry_client, run_models_cli, use_store


@pytest.fixture
def catalog(gguf_exports: GgufExports):
    store = open_storage(gguf_exports.settings)
    yield Catalog(store)
    store.close()


def test_the_export_is_one_gguf_revision_that_auto_serves_on_llamacpp(gguf_exports: GgufExports,
                                                                       catalog: Catalog) -> None:
    revision = gguf_exports.revisions["q8_0"]
    assert revision == gguf_revision(gguf_exports.source, "q8_0") == f"gguf-q8_0-{gguf_exports.source}"
    manifest = catalog.manifest(MODEL_ID, revision)
    fetched = gguf_exports.files["q8_0"]
    assert manifest.model_type == "llm"
    assert [(f.path, f.size, f.sha256) for f in manifest.files] == [
        (fetched.name, fetched.stat().st_size, file_sha256(fetched))]
    assert fetched.name == "SmolLM2-135M-Instruct.Q8_0.gguf"
    assert gguf_quantization(fetched) == "Q8_0"
    assert manifest.source["kind"] == "gguf-export" and manifest.source["from_revision"] == gguf_exports.source
    assert manifest.source["stored"] == "as is" and manifest.source["quantization"] == "Q8_0"
    assert engine_name("auto", "llm", str(fetched.parent)) == "llamacpp"
    # The export does not move ``current``; exporting again returns the stored revision untouched.
    assert catalog.get_model(MODEL_ID).aliases["current"] == gguf_exports.source
    again = export_gguf(catalog, MODEL_ID)
    assert again.revision == revision and again.created_at == manifest.created_at


def test_what_cannot_be_exported_is_a_400(gguf_exports: GgufExports, catalog: Catalog, small_model: Path) -> None:
    with pytest.raises(InvalidRequestError) as bad_type:
        export_gguf(catalog, MODEL_ID, outtype="q4_k")
    assert bad_type.value.status == 400 and bad_type.value.param == "outtype"
    with pytest.raises(InvalidRequestError, match="already a GGUF file") as gguf:
        export_gguf(catalog, MODEL_ID, gguf_exports.revisions["q8_0"])
    assert gguf.value.status == 400 and gguf.value.param == "revision"
    import_folder(catalog, "sentence-transformers/small", small_model, "embedding")
    with pytest.raises(InvalidRequestError, match="Only llm models") as embedding:
        export_gguf(catalog, "sentence-transformers/small")
    assert embedding.value.status == 400 and embedding.value.code == "gguf_export_unsupported"


def test_no_converter_is_a_400_naming_make_llama_server(gguf_exports: GgufExports, catalog: Catalog,
                                                        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODEL_SERVICE_ENGINES", str(tmp_path / "empty-engines"))
    with pytest.raises(InvalidRequestError, match="make llama-server") as missing:
        export_gguf(catalog, MODEL_ID, outtype="bf16")
    assert missing.value.status == 400 and missing.value.code == "gguf_export_unavailable"
    assert not catalog.is_complete(MODEL_ID, gguf_revision(gguf_exports.source, "bf16"))


def test_a_converter_failure_names_its_reason_and_stores_nothing(smollm_path: Path, catalog: Catalog,
                                                                  tmp_path: Path) -> None:
    """An architecture llama.cpp does not know: the converter's own last line says so."""
    import numpy as np
    from safetensors.numpy import save_file

    folder = tmp_path / "unknown"
    shutil.copytree(smollm_path, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    save_file({"model.norm.weight": np.ones(4, dtype=np.float32)}, str(folder / "model.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["NoSuchForCausalLM"]}))
    source = import_folder(catalog, "org/unknown-arch", folder, "llm").revision
    with pytest.raises(GgufConversionError, match="Model NoSuchForCausalLM is not supported") as failed:
        export_gguf(catalog, "org/unknown-arch", tmp_dir=tmp_path)
    assert failed.value.status == 400 and "org/unknown-arch@" in failed.value.message
    target = gguf_revision(source, "q8_0")
    assert not catalog.is_complete("org/unknown-arch", target)
    assert not catalog.store.list(f"org/unknown-arch/revisions/{target}/")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unknown"]  # the scratch folder is gone too


def test_a_corrupted_export_is_refused_on_fetch(gguf_exports: GgufExports, catalog: Catalog, tmp_path: Path) -> None:
    revision = gguf_exports.revisions["q8_0"]
    name = gguf_exports.files["q8_0"].name
    with flipped_byte(catalog.store, file_key(MODEL_ID, revision, name)), \
            pytest.raises(ChecksumError, match=rf"file '{name}'"):
        fetch_model(catalog.store, MODEL_ID, revision, tmp_path / "cache")


def test_cli_export_gguf_prints_the_revision(gguf_exports: GgufExports, monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    use_store(monkeypatch, gguf_exports.settings, tmp_path)
    code, out, _ = run_models_cli(capsys, "export-gguf", MODEL_ID, "--type", "q8_0")
    assert code == 0 and f"MODEL_REVISION={gguf_exports.revisions['q8_0']}" in out
    code, _, err = run_models_cli(capsys, "export-gguf", MODEL_ID, "--revision", gguf_exports.revisions["q8_0"])
    assert code == 1 and "already a GGUF file" in err


async def test_http_export_job(gguf_exports: GgufExports) -> None:
    async with registry_client(gguf_exports.settings) as (_, client):
        await check_export_route(client, MODEL_ID, "export-gguf", {"outtype": "q8_0"}, {"outtype": "q4_k"},
                                 gguf_exports.revisions["q8_0"])
        resp = await client.post(f"/models/{MODEL_ID}/export-gguf",
                                 json={"revision": gguf_exports.revisions["q8_0"]})
        assert resp.status_code == 400 and "already a GGUF file" in resp.json()["error"]["message"]
