"""What a model worker calls at start-up: bring a verified copy of a revision into a local cache.

``fetch_model`` resolves a revision or alias, reads its manifest once, and copies the files into
``<cache>/<model_id>/<revision>/``, skipping files already there whose sha256 matches and verifying
every file it writes. A mismatch is a ``ChecksumError`` that names the file: a worker must fail to
start rather than load corrupted weights. The returned folder is a normal Hugging Face folder.

Workers read the store directly, not through the registry server (which need not run):
``fetch_from_store`` is their one entry point (``model_service.model_files``); it opens the store
the registry's settings describe, fetches, and closes it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from model_registry.catalog import Catalog, file_key
from model_registry.errors import ChecksumError, FetchError, ModelTypeError
from model_registry.ids import validate_model_id
from model_registry.ingest import Progress
from model_registry.records import FileEntry
from model_registry.settings import ModelRegistrySettings
from model_registry.storage import Storage, file_sha256, open_storage


@dataclass(frozen=True)
class Fetched:
    """A verified local copy of one revision, with the figures a worker logs about it."""

    folder: Path
    revision: str
    files: int
    size: int
    store: str  # where it came from (``Storage.describe``)


def fetch_from_store(model_id: str, revision_or_alias: str | None, cache_dir: str | Path, *,
                     model_type: str | None = None, settings: ModelRegistrySettings | None = None) -> Fetched:
    """Open the store ``settings`` describe (default: ``MODEL_REGISTRY_*``/``MINIO_*`` from the
    environment), ``fetch_model`` from it and close it. Every failure is a ``FetchError`` naming the
    store, with the typed cause (missing model or revision, wrong type, checksum, storage) chained."""
    storage = open_storage(settings or ModelRegistrySettings())
    where = storage.describe()
    progress = Progress()
    try:
        storage.check()
        folder = fetch_model(storage, model_id, revision_or_alias, cache_dir, progress, model_type=model_type)
    except Exception as exc:  # the typed store errors and OSError alike
        raise FetchError(where, exc) from exc
    finally:
        storage.close()
    return Fetched(folder, folder.name, progress.files_done, progress.bytes_done, where)


def fetch_model(store: Storage, model_id: str, revision_or_alias: str | None, cache_dir: str | Path,
                progress: Progress | None = None, *, model_type: str | None = None) -> Path:
    """Copy and verify a revision (default alias ``current``); return the local folder.

    ``model_type``: refuse a revision stored as another type, before any byte is copied."""
    catalog = Catalog(store)
    validate_model_id(model_id)
    revision = catalog.resolve(model_id, revision_or_alias)
    manifest = catalog.manifest(model_id, revision)
    if model_type and manifest.model_type and manifest.model_type != model_type:
        raise ModelTypeError(f"The model '{model_id}' revision '{revision}' is stored as a "
                             f"'{manifest.model_type}' model but this worker serves '{model_type}'.")
    target = Path(cache_dir).expanduser().resolve() / model_id / revision
    target.mkdir(parents=True, exist_ok=True)
    progress = progress or Progress()
    progress.set_totals(len(manifest.files), manifest.total_size)
    for entry in manifest.files:
        local = target / entry.path
        if local.is_file() and local.stat().st_size == entry.size and file_sha256(local) == entry.sha256:
            progress.add_bytes(entry.size)
        else:
            _copy_verified(store, model_id, revision, entry, local, progress)
        progress.file_done()
    return target


def _copy_verified(store: Storage, model_id: str, revision: str, entry: FileEntry, local: Path,
                   progress: Progress) -> None:
    """Stream to a temp file next to ``local``, hash as we go, and rename only if the hash matches."""
    local.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name}.", suffix=".part")
    digest = hashlib.sha256()
    try:
        try:
            chunks = store.iter_chunks(file_key(model_id, revision, entry.path))
        except KeyError:
            raise ChecksumError(entry.path, entry.sha256, "no such object",
                                where=f"{model_id}@{revision} in {store.describe()}") from None
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
                progress.add_bytes(len(chunk))
        if digest.hexdigest() != entry.sha256:
            raise ChecksumError(entry.path, entry.sha256, digest.hexdigest(),
                                where=f"{model_id}@{revision} in {store.describe()}")
        os.replace(tmp, local)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise

