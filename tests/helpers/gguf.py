"""The real SmolLM2 in a local model store with its GGUF conversions (llama.cpp's converter), built once
per session; shared by the tests and the engines benchmark."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from model_registry.catalog import Catalog
from model_registry.fetch import fetch_model
from model_registry.settings import ModelRegistrySettings
from model_registry.sources.folder import import_folder
from model_registry.sources.gguf_export import export_gguf
from model_registry.storage import open_storage
from tests.helpers.model_registry import registry_settings

MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


@dataclass
class GgufExports:
    settings: ModelRegistrySettings  # the local store holding the model and its conversions
    source: str  # the Hugging Face revision the conversions came from
    revisions: dict[str, str]  # "q8_0" / "bf16" ... -> stored revision
    files: dict[str, Path]  # the same, fetched and verified: the one .gguf file of each


def export_smollm(smollm_path: Path, tmp: Path, outtypes: tuple[str, ...] = ("q8_0",)) -> GgufExports:
    settings = registry_settings("local", tmp)
    store = open_storage(settings)
    try:
        catalog = Catalog(store)
        source = import_folder(catalog, MODEL_ID, smollm_path, "llm").revision
        revisions = {t: export_gguf(catalog, MODEL_ID, outtype=t).revision for t in outtypes}
        files = {t: next(fetch_model(store, MODEL_ID, rev, tmp / "cache").glob("*.gguf"))
                 for t, rev in revisions.items()}
    finally:
        store.close()
    return GgufExports(settings, source, revisions, files)
