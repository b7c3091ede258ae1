"""A model in a local model store with its ONNX exports (fp32 and int8): the real MiniLM (once per
session) or the tiny test cross-encoder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from model_registry.catalog import Catalog
from model_registry.fetch import fetch_model
from model_registry.settings import ModelRegistrySettings
from model_registry.sources.folder import import_folder
from model_registry.sources.onnx_export import export_onnx
from model_registry.storage import open_storage
from tests.helpers.model_registry import registry_settings

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class OnnxExports:
    settings: ModelRegistrySettings  # the local store holding the model and its exports
    source: str  # the torch revision the exports came from
    revisions: dict[str, str]  # "fp32" / "int8" -> stored revision
    folders: dict[str, Path]  # the same, fetched and verified


def export_minilm(minilm_path: Path, tmp: Path) -> OnnxExports:
    return export_to_store(minilm_path, tmp, MODEL_ID, "embedding")


def export_to_store(folder: Path, tmp: Path, model_id: str, model_type: str) -> OnnxExports:
    """Import ``folder`` into a local store under ``tmp``, export it (fp32 and int8) and fetch both."""
    settings = registry_settings("local", tmp)
    store = open_storage(settings)
    try:
        catalog = Catalog(store)
        source = import_folder(catalog, model_id, folder, model_type).revision
        revisions = {"fp32": export_onnx(catalog, model_id).revision,
                     "int8": export_onnx(catalog, model_id, quantize="int8").revision}
        folders = {k: fetch_model(store, model_id, rev, tmp / "cache") for k, rev in revisions.items()}
    finally:
        store.close()
    return OnnxExports(settings, source, revisions, folders)
