"""Placeholder secrets from .env.example are refused outside dev, and the error never shows them."""

from __future__ import annotations

import pytest

from common.settings import PlaceholderSecretError, refuse_placeholder_secrets
from model_registry.settings import ModelRegistrySettings
from model_registry.storage import open_storage


def test_placeholder_refused_by_default(monkeypatch):
    monkeypatch.delenv("MODEL_SERVICE_ENV", raising=False)
    with pytest.raises(PlaceholderSecretError) as info:
        refuse_placeholder_secrets({"MINIO_SVC_PASSWORD": "change-me-service-password", "HF_TOKEN": None})
    assert "MINIO_SVC_PASSWORD" in str(info.value)
    assert "change-me-service-password" not in str(info.value)


def test_real_secret_and_dev_mode_pass(monkeypatch):
    monkeypatch.setenv("MODEL_SERVICE_ENV", "production")
    refuse_placeholder_secrets({"MINIO_SVC_PASSWORD": "x7Hq2-long-random"})
    monkeypatch.setenv("MODEL_SERVICE_ENV", "dev")
    refuse_placeholder_secrets({"MINIO_SVC_PASSWORD": "minioadmin"})


def test_s3_store_with_example_password_does_not_open(monkeypatch):
    monkeypatch.setenv("MODEL_SERVICE_ENV", "production")
    settings = ModelRegistrySettings(storage_backend="s3", s3_endpoint="127.0.0.1:9", s3_access_key="u",
                                     s3_secret_key="change-me-service-password")
    with pytest.raises(PlaceholderSecretError):
        open_storage(settings)


def test_empty_env_counts_as_unset(monkeypatch):
    """Compose passes optional variables as ``${VAR:-}``: an empty value must mean "not set"."""
    from service_registry.settings import RegistrySettings

    monkeypatch.setenv("REGISTRY_STATIC_FILE", "")
    monkeypatch.setenv("REGISTRY_POLL_INTERVAL_S", "")
    settings = RegistrySettings()
    assert settings.static_file is None
    assert settings.all_static_upstreams() == []
