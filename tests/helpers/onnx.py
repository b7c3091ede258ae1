"""The real MiniLM in a local model store with its ONNX exports (fp32 and int8), built once per session."""

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
    settings = registry_settings("local", tmp)
    store = open_storage(settings)
    try:
        catalog = Catalog(store)
        source = import_folder(catalog, MODEL_ID, minilm_path, "embedding").revision
        revisions = {"fp32": export_onnx(catalog, MODEL_ID).revision,
                     "int8": export_onnx(catalog, MODEL_ID, quantize="int8").revision}
        folders = {k: fetch_model(store, MODEL_ID, rev, tmp / "cache") for k, rev in revisions.items()}
    finally:
        store.close()
    return OnnxExports(settings, source, revisions, folders)
