"""Start-up step one: the model files a worker loads, and the promise that loading them stays offline.

With ``model_source="path"`` the folder is ``MODEL_PATH`` as given. With ``model_source="store"``
the worker reads the object store the model registry writes directly (the registry server need not
run), through the registry's one entry point for workers, ``model_registry.fetch.fetch_from_store``
(and its ``FetchError``): it resolves the revision or alias, copies the files into ``cache_dir``
(files already there whose sha256 matches are kept, not copied again), verifies every sha256 and
hands back a plain Hugging Face folder. ``MODEL_REGISTRY_*`` and the seed's ``MINIO_*`` names
describe the store, read from the environment by the registry's own settings class, so they mean
the same thing in one ``.env``.

This runs in the worker's load thread, so ``/health`` answers 503 ``loading`` meanwhile. Any failure
(store unreachable, model or revision missing, stored as another type, a checksum mismatch) is a
``ModelFilesError`` naming the model, the store and, for a mismatch, the file; the worker keeps
running and reports it in ``/health`` (503, status ``error``) and its log. Nothing is ever loaded
from an unverified copy.

Every engine loads local files only, so this is also the one place the worker turns the Hugging Face
libraries offline (``offline``), before any engine imports them.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

from model_registry.errors import FetchError
from model_registry.fetch import fetch_from_store
from model_service.settings import WorkerSettings

if TYPE_CHECKING:
    from model_registry.settings import ModelRegistrySettings

log = logging.getLogger(__name__)
OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


class ModelFilesError(RuntimeError):
    """The worker cannot get a verified copy of its model files; it must not load anything."""


def prepare_model_files(settings: WorkerSettings, store: ModelRegistrySettings | None = None) -> WorkerSettings:
    """The settings the engine should load with (``model_path`` filled in for ``store``), with the
    Hugging Face libraries set offline. ``store``: the store's settings (default: from the environment)."""
    if settings.model_source == "store":
        settings = settings.model_copy(update={"model_path": resolve_model_path(settings, store)})
    offline(forced=settings.model_source == "store")
    return settings


def offline(*, forced: bool) -> None:
    """Keep model libraries off the network. A verified store copy is complete, so nothing may reach
    for the network while loading it (``forced``); for a plain path it is the default, which a site may
    override (``HF_HUB_OFFLINE=0``) to let ``MODEL_PATH`` name a hub repo."""
    for name in OFFLINE_ENV:
        if forced:
            os.environ[name] = "1"
        else:
            os.environ.setdefault(name, "1")


def resolve_model_path(settings: WorkerSettings, store: ModelRegistrySettings | None = None) -> str:
    """Fetch and verify the configured revision into the cache; return the local folder."""
    model_id = settings.store_model_id or settings.model_name
    what = f"model '{model_id}' revision '{settings.model_revision}'"
    log.info("fetching %s from the model store into %s", what, settings.cache_dir)
    started = time.monotonic()
    try:
        got = fetch_from_store(model_id, settings.model_revision, settings.cache_dir,
                               model_type=settings.model_type, settings=store)
    except FetchError as exc:
        raise ModelFilesError(f"Cannot start from the model store ({exc.where}): {what}: {exc.detail}") from exc
    log.info("%s@%s verified from %s: %d files, %.1f MB (sha256) in %.1f s -> %s", model_id, got.revision,
             got.store, got.files, got.size / 1e6, time.monotonic() - started, got.folder)
    return str(got.folder)
