"""Model registry against both real backends (a folder and SeaweedFS S3): storage primitives, folder
import, manifests, bundles, fetch_model with checksum verification, wrong credentials."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from model_registry.catalog import Catalog, file_key, manifest_key
from model_registry.errors import ChecksumError, StorageError
from model_registry.fetch import fetch_model
from model_registry.settings import ModelRegistrySettings
from model_registry.sources.bundle import export_bundle, import_bundle
from model_registry.sources.folder import import_folder
from model_registry.storage import Storage, open_storage
from tests.helpers.model_registry import registry_settings, small_copy
from tests.helpers.s3 import S3Server

# Fixtures shared by the registry's test modules.

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture
def store(backend_settings: ModelRegistrySettings) -> Iterator[Storage]:
    storage = open_storage(backend_settings)
    storage.check()
    try:
        yield storage
    finally:
        storage.close()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_storage_primitives(store: Storage) -> None:
    big = os.urandom(6 * 1024 * 1024 + 123)  # over the 5 MiB part size: multipart on S3
    store.put_stream("org/m/revisions/r/files/big.bin", io.BytesIO(big), -1)
    store.put_stream("org/m/revisions/r/files/sub/a.txt", io.BytesIO(b"hello"), 5)
    store.put_json("org/m/model.json", {"id": "org/m"})
    assert store.stat("org/m/revisions/r/files/big.bin").size == len(big)  # type: ignore[union-attr]
    assert store.get_bytes("org/m/revisions/r/files/big.bin") == big
    assert b"".join(store.iter_chunks("org/m/revisions/r/files/big.bin", 10, 20)) == big[10:30]
    assert store.get_json("org/m/model.json") == {"id": "org/m"} and store.get_json("nope.json") is None
    assert store.stat("org/m/missing") is None and not store.exists("org/m/missing")
    with pytest.raises(KeyError):
        store.get_bytes("org/m/missing")
    assert store.list("", recursive=False) == ["org/"]
    assert store.list("org/m/", recursive=False) == ["org/m/model.json", "org/m/revisions/"]
    assert store.list("org/m/revisions/") == ["org/m/revisions/r/files/big.bin", "org/m/revisions/r/files/sub/a.txt"]
    assert store.sha256("org/m/revisions/r/files/sub/a.txt") == hashlib.sha256(b"hello").hexdigest()
    assert store.delete_prefix("org/m/revisions/") == 2
    assert store.list("org/") == ["org/m/model.json"]


def test_import_list_manifest_fetch(store: Storage, minilm_path: Path, tmp_path: Path) -> None:
    catalog = Catalog(store)
    manifest = import_folder(catalog, MODEL, minilm_path, "embedding")
    files = tree(minilm_path)
    assert {f.path for f in manifest.files} == set(files)
    for entry in manifest.files:  # sha256 computed independently of the registry
        assert entry.sha256 == sha256_of(minilm_path / entry.path)
        assert entry.size == (minilm_path / entry.path).stat().st_size
    assert manifest.complete and manifest.total_size == sum(len(b) for b in files.values())
    [record] = catalog.list_models()
    assert record.id == MODEL and record.type == "embedding" and record.aliases["current"] == manifest.revision
    # Importing the unchanged folder again lands on the same revision.
    assert import_folder(catalog, MODEL, minilm_path).revision == manifest.revision

    cache = tmp_path / "cache"
    folder = fetch_model(store, MODEL, None, cache)
    assert folder == cache / MODEL / manifest.revision and tree(folder) == files
    assert fetch_model(store, MODEL, "current", cache) == folder  # second time: verified, nothing copied


def test_flipped_byte_in_store_is_a_checksum_error_naming_the_file(store: Storage, small_model: Path,
                                                                    tmp_path: Path) -> None:
    catalog = Catalog(store)
    manifest = import_folder(catalog, MODEL, small_model, "embedding")
    key = file_key(MODEL, manifest.revision, "config.json")
    data = bytearray(store.get_bytes(key))
    data[5] ^= 0x01
    store.put_bytes(key, bytes(data))
    with pytest.raises(ChecksumError) as err:
        fetch_model(store, MODEL, None, tmp_path / "cache")
    assert "config.json" in err.value.message and err.value.path == "config.json"
    assert not (tmp_path / "cache" / MODEL / manifest.revision / "config.json").exists()


def test_corrupted_cache_file_is_replaced(store: Storage, small_model: Path, tmp_path: Path) -> None:
    catalog = Catalog(store)
    import_folder(catalog, MODEL, small_model, "embedding")
    folder = fetch_model(store, MODEL, None, tmp_path / "cache")
    (folder / "config.json").write_text("{}")
    assert fetch_model(store, MODEL, None, tmp_path / "cache") == folder
    assert (folder / "config.json").read_bytes() == (small_model / "config.json").read_bytes()


def test_bundle_round_trip_is_byte_identical(store: Storage, minilm_path: Path, tmp_path: Path) -> None:
    catalog = Catalog(store)
    first = import_folder(catalog, MODEL, minilm_path, "embedding", revision="r1")
    second = import_folder(catalog, MODEL, small_copy(minilm_path, tmp_path / "small"), "embedding",
                           revision="r2")
    catalog.set_alias(MODEL, "stable", "r1")
    bundle = tmp_path / "minilm.tar"
    assert export_bundle(catalog, MODEL, bundle, all_revisions=True) == ["r1", "r2"]
    catalog.delete_model(MODEL)
    assert catalog.list_models() == []
    manifests = import_bundle(catalog, bundle)
    assert sorted(m.revision for m in manifests) == ["r1", "r2"]
    record = catalog.get_model(MODEL)
    assert record.aliases == {"current": "r2", "stable": "r1"} and record.type == "embedding"
    assert catalog.manifest(MODEL, "r1").files == first.files and catalog.manifest(MODEL, "r2").files == second.files
    assert tree(fetch_model(store, MODEL, "stable", tmp_path / "cache")) == tree(minilm_path)
    assert tree(fetch_model(store, MODEL, "current", tmp_path / "cache")) == tree(tmp_path / "small")


def test_tampered_bundle_is_refused_and_nothing_is_listed(store: Storage, small_model: Path,
                                                          tmp_path: Path) -> None:
    catalog = Catalog(store)
    import_folder(catalog, MODEL, small_model, "embedding", revision="r1")
    bundle, bad = tmp_path / "ok.tar", tmp_path / "bad.tar"
    export_bundle(catalog, MODEL, bundle)
    catalog.delete_model(MODEL)
    with tarfile.open(bundle) as src, tarfile.open(bad, "w") as dst:
        for member in src:
            data = src.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            if member.name.endswith("files/config.json"):
                data = bytes([data[0] ^ 1]) + data[1:]
            dst.addfile(member, io.BytesIO(data))
    with pytest.raises(ChecksumError) as err:
        import_bundle(catalog, bad)
    assert err.value.path == "config.json"
    assert catalog.list_models() == [] and not catalog.is_complete(MODEL, "r1")
    assert store.list(f"{MODEL}/revisions/r1/") == []


def test_incomplete_revision_is_never_ready(store: Storage, small_model: Path) -> None:
    catalog = Catalog(store)
    store.put_bytes(file_key(MODEL, "partial", "config.json"), b"{}")
    store.put_json(manifest_key(MODEL, "partial"), {"model_id": MODEL, "revision": "partial", "complete": False})
    assert catalog.list_models() == [] and not catalog.is_complete(MODEL, "partial")
    import_folder(catalog, MODEL, small_model, revision="good")
    with pytest.raises(Exception) as err:
        catalog.manifest(MODEL, "partial")
    assert getattr(err.value, "status", None) == 404


def test_wrong_s3_secret_is_refused(s3_server: S3Server, tmp_path: Path) -> None:
    settings = registry_settings("s3", tmp_path, s3_server, s3_secret_key="not-the-secret")
    storage = open_storage(settings)
    with pytest.raises(StorageError) as err:
        storage.check()
    assert "SignatureDoesNotMatch" in err.value.message or "InvalidAccessKeyId" in err.value.message
    assert "not-the-secret" not in err.value.message and s3_server.secret_key not in err.value.message
