"""Model registry: id/revision/path validation, settings aliases, Range parsing (pure functions)."""

from __future__ import annotations

import pytest

from common.errors import InvalidRequestError
from model_registry.ids import validate_alias, validate_file_path, validate_model_id, validate_revision
from model_registry.routes.files import RangeNotSatisfiableError, parse_range
from model_registry.settings import ModelRegistrySettings


@pytest.mark.parametrize("model_id", ["Qwen/Qwen2.5-0.5B-Instruct", "gpt2", "sentence-transformers/all-MiniLM-L6-v2",
                                      "a_b/c.d-e"])
def test_good_model_ids(model_id: str) -> None:
    assert validate_model_id(model_id) == model_id


@pytest.mark.parametrize("model_id", [
    "", "a/b/c", "../etc", "a/..", "a/../b", "/abs", "a\\b", "a b", "a/b\x00", "a/\nb", ".hidden", "_jobs",
    "org/revisions", "aliases", "a//b", "a/", "x" * 201, "a..b", "-dash",
])
def test_bad_model_ids_are_400(model_id: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        validate_model_id(model_id)
    assert err.value.status == 400 and err.value.code == "invalid_model_id"


def test_revisions_and_aliases() -> None:
    assert validate_revision("0123456789abcdef0123456789abcdef01234567")
    assert validate_alias("current") and validate_revision("v1.0")
    for bad in ("", "../x", "a/b", "a..b", "x" * 65, ".x", "a\x7f"):
        with pytest.raises(InvalidRequestError):
            validate_revision(bad)


@pytest.mark.parametrize("path", ["config.json", "onnx/model.onnx", ".gitattributes", "1_Pooling/config.json"])
def test_good_file_paths(path: str) -> None:
    assert validate_file_path(path) == path


@pytest.mark.parametrize("path", ["", "/etc/passwd", "../x", "a/../b", "a\\b", "a//b", "./a", "a/\x01",
                                  "C:/x", "a/" * 600])
def test_bad_file_paths(path: str) -> None:
    with pytest.raises(InvalidRequestError):
        validate_file_path(path)


def test_seed_variable_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"MINIO_ENDPOINT": "https://minio:9000", "MINIO_ROOT_USER": "root",
                       "MINIO_SVC_USER": "svc", "MINIO_ROOT_PASSWORD": "rootpw", "MINIO_SVC_PASSWORD": "svcpw",
                       "HF_TOKEN": "hf_secret", "HF_ENDPOINT": "http://mirror", "MODEL_REGISTRY_PORT": "9999",
                       "MODEL_REGISTRY_STORAGE_BACKEND": "s3"}.items():
        monkeypatch.setenv(key, value)
    s = ModelRegistrySettings(_env_file=None)
    assert s.port == 9999 and s.storage_backend == "s3"
    assert s.s3_access_key == "svc" and s.s3_secret_key is not None
    assert s.s3_secret_key.get_secret_value() == "svcpw"
    assert s.s3_host_and_secure() == ("minio:9000", True)
    assert s.hf_token is not None and s.hf_token.get_secret_value() == "hf_secret"
    assert s.hf_endpoint == "http://mirror" and s.s3_bucket == "models"
    assert "svcpw" not in repr(s) and "hf_secret" not in repr(s)
    monkeypatch.delenv("MINIO_SVC_USER")
    monkeypatch.delenv("MINIO_SVC_PASSWORD")
    s = ModelRegistrySettings(_env_file=None)
    assert s.s3_access_key == "root" and s.s3_secret_key.get_secret_value() == "rootpw"  # type: ignore[union-attr]


def test_default_store_root_follows_model_service_home(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("MODEL_SERVICE_HOME", str(tmp_path))
    assert ModelRegistrySettings(_env_file=None).local_root == tmp_path / "store"


def test_parse_range() -> None:
    assert parse_range(None, 10) is None
    assert parse_range("bytes=2-4", 10) == (2, 4)
    assert parse_range("bytes=5-", 10) == (5, 9)
    assert parse_range("bytes=-3", 10) == (7, 9)
    assert parse_range("bytes=0-100", 10) == (0, 9)
    assert parse_range("items=1-2", 10) is None
    with pytest.raises(RangeNotSatisfiableError):
        parse_range("bytes=10-", 10)
