"""What a model worker calls at start-up: bring a verified copy of a revision into a local cache.

``fetch_model`` copies the files of one complete revision into ``<cache>/<model_id>/<revision>/``,
skipping files already there whose sha256 matches, and verifies every file it writes. A mismatch is a
``ChecksumError`` that names the file: a worker must fail to start rather than load corrupted weights.
The returned folder is a normal Hugging Face folder to load with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from model_registry.catalog import Catalog, file_key
from model_registry.errors import ChecksumError
from model_registry.ids import validate_model_id
from model_registry.ingest import Progress
from model_registry.records import FileEntry
from model_registry.storage import Storage, file_sha256


def fetch_model(store: Storage, model_id: str, revision_or_alias: str | None, cache_dir: str | Path,
                progress: Progress | None = None) -> Path:
    """Copy and verify a revision (default alias ``current``); return the local folder."""
    catalog = Catalog(store)
    validate_model_id(model_id)
    revision = catalog.resolve(model_id, revision_or_alias)
    manifest = catalog.manifest(model_id, revision)
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

