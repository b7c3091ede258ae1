"""Where a worker's model files come from: a folder as given, or a verified copy from the model store.

With ``model_source="store"`` the worker reads the same object store the model registry writes (the
registry's own settings class, so ``MODEL_REGISTRY_*`` and the seed's ``MINIO_*`` names mean the same
thing in one ``.env``). It resolves the revision or alias, copies the files into ``cache_dir`` (files
already there whose sha256 matches are kept, not copied again), verifies every sha256 and hands the
engine a plain Hugging Face folder, loaded with ``HF_HUB_OFFLINE=1``.

This runs in the worker's load thread, so ``/health`` answers 503 ``loading`` meanwhile. Any failure
(store unreachable, model or revision missing, a checksum mismatch) is a ``ModelFilesError`` naming
the model, the store and, for a mismatch, the file; the worker keeps running and reports it in
``/health`` (503, status ``error``) and its log. Nothing is ever loaded from an unverified copy.
"""

from __future__ import annotations

import logging
import os
import time

from model_registry.catalog import Catalog
from model_registry.fetch import fetch_model
from model_registry.ingest import Progress
from model_registry.settings import ModelRegistrySettings
from model_registry.storage import open_storage
from model_service.settings import WorkerSettings

log = logging.getLogger(__name__)


class ModelFilesError(RuntimeError):
    """The worker cannot get a verified copy of its model files; it must not load anything."""


def prepare_model_files(settings: WorkerSettings, store: ModelRegistrySettings | None = None) -> WorkerSettings:
    """The settings the engine should load with: unchanged for ``path``, ``model_path`` filled for ``store``."""
    if settings.model_source != "store":
        return settings
    return settings.model_copy(update={"model_path": resolve_model_path(settings, store)})


def resolve_model_path(settings: WorkerSettings, store: ModelRegistrySettings | None = None) -> str:
    """Fetch and verify the configured revision into the cache; return the local folder.

    ``store``: the store's settings (default: read from the environment, like the registry does).
    """
    model_id = settings.store_model_id or settings.model_name
    what = f"model '{model_id}' revision '{settings.model_revision}'"
    storage = open_storage(store or ModelRegistrySettings())
    where = storage.describe()
    log.info("fetching %s from %s into %s", what, where, settings.cache_dir)
    started = time.monotonic()
    progress = Progress()
    try:
        storage.check()
        catalog = Catalog(storage)
        revision = catalog.resolve(model_id, settings.model_revision)
        manifest = catalog.manifest(model_id, revision)
        if manifest.model_type and manifest.model_type != settings.model_type:
            raise ModelFilesError(f"Cannot start from the model store: {what} is stored as a "
                                  f"'{manifest.model_type}' model but this worker serves '{settings.model_type}'.")
        folder = fetch_model(storage, model_id, revision, settings.cache_dir, progress)
    except ModelFilesError:
        raise
    except Exception as exc:  # the typed store errors and OSError alike: say what and where, keep the cause
        message = getattr(exc, "message", None) or str(exc)
        raise ModelFilesError(f"Cannot start from the model store ({where}): {what}: "
                              f"{type(exc).__name__}: {message}") from exc
    finally:
        storage.close()
    # The verified copy is complete: nothing may reach for the network while loading it.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    log.info("%s@%s verified: %d files, %.1f MB (sha256) in %.1f s -> %s", model_id, revision,
             progress.files_done, progress.bytes_done / 1e6, time.monotonic() - started, folder)
    return str(folder)
