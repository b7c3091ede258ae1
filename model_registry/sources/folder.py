"""Import a model from a folder on the registry host (or the CLI's machine).

The revision name defaults to a fingerprint of the folder's listing (paths, sizes, mtimes), so
importing the same unchanged folder twice lands on the same revision instead of a copy.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from common.errors import InvalidRequestError
from common.records import ModelType
from model_registry.catalog import Catalog, file_key
from model_registry.ids import validate_model_id
from model_registry.ingest import Progress, RevisionWriter
from model_registry.records import Manifest
from model_registry.storage import file_sha256

SKIPPED_DIRS = frozenset({".git", ".cache", "__pycache__"})


def folder_files(folder: Path) -> list[tuple[str, Path]]:
    """Regular files (symlinks to files are followed, as in a HF cache snapshot), sorted by path."""
    out: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file():
                out.append((path.relative_to(folder).as_posix(), path))
    return sorted(out)


def folder_fingerprint(files: list[tuple[str, Path]]) -> str:
    digest = hashlib.sha256()
    for rel, path in files:
        st = path.stat()
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return "local-" + digest.hexdigest()[:16]


def check_folder(path: str | Path) -> Path:
    """The folder to import, or a 400 that says what is wrong with the given path."""
    folder = Path(path).expanduser()
    if not folder.is_absolute():
        raise InvalidRequestError(f"The import path '{path}' must be absolute.", param="path")
    if not folder.is_dir():
        raise InvalidRequestError(f"The import path '{path}' is not a folder on the registry host.",
                                  param="path")
    return folder


def import_folder(catalog: Catalog, model_id: str, folder: str | Path, model_type: ModelType | None = None,
                  progress: Progress | None = None, revision: str | None = None,
                  source: dict[str, Any] | None = None, make_current: bool = True) -> Manifest:
    """Copy every file of ``folder`` into a new revision, hashing while streaming, then commit it.

    ``source``: what the manifest records as the origin (a GGUF import names the file it converted).
    ``make_current``: False keeps ``current`` where it is (unless the model had none yet).
    """
    validate_model_id(model_id)
    root = check_folder(folder)
    files = folder_files(root)
    if not files:
        raise InvalidRequestError(f"The folder '{folder}' has no files to import.", param="path")
    revision = revision or folder_fingerprint(files)
    progress = progress or Progress()
    writer = RevisionWriter(catalog, model_id, revision, progress)
    if catalog.is_complete(writer.model_id, revision):
        progress.set_totals(len(files), sum(p.stat().st_size for _, p in files))
        return catalog.manifest(writer.model_id, revision)
    progress.set_totals(len(files), sum(p.stat().st_size for _, p in files))
    for rel, path in files:
        size = path.stat().st_size
        info = catalog.store.stat(file_key(writer.model_id, revision, rel))
        if info is not None and info.size == size and writer.already_stored(rel, size, file_sha256(path)):
            continue
        writer.store_file(rel, path, where=str(path))
    manifest, _ = writer.commit(model_type, source or {"kind": "folder", "path": str(root)},
                                make_current=make_current)
    return manifest

