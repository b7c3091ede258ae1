"""Writing one revision into the store, whatever the source: hash while streaming, verify, commit.

Every source (folder, Hugging Face, bundle) goes through ``RevisionWriter`` so the rules hold in one
place: each file is hashed as it is stored, compared with the sha256 the source promised (if any),
files already stored by an interrupted run are re-verified by reading them back, and the manifest
with ``complete: true`` is written only after the last file.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from common.records import ModelType
from model_registry.catalog import Catalog, file_key
from model_registry.errors import ChecksumError
from model_registry.ids import validate_file_path, validate_model_id, validate_revision
from model_registry.records import FileEntry, Manifest, ModelRecord
from model_registry.storage import HashingReader


@dataclass
class Progress:
    """Counters a job, a CLI progress bar or a test watches; updated from worker threads."""

    bytes_done: int = 0
    bytes_total: int = 0
    files_done: int = 0
    files_total: int = 0
    on_change: Callable[[Progress], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set_totals(self, files: int, size: int) -> None:
        with self._lock:
            self.files_total, self.bytes_total = files, size
        self._notify()

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes_done += n
        self._notify()

    def file_done(self) -> None:
        with self._lock:
            self.files_done += 1
        self._notify()

    def _notify(self) -> None:
        if self.on_change:
            self.on_change(self)


class RevisionWriter:
    def __init__(self, catalog: Catalog, model_id: str, revision: str, progress: Progress | None = None, *,
                 count_bytes: bool = True) -> None:
        self.catalog = catalog
        self.store = catalog.store
        self.model_id = validate_model_id(model_id)
        self.revision = validate_revision(revision)
        self.progress = progress or Progress()
        self.files: dict[str, FileEntry] = {}
        # False when the source reports transfer bytes itself (a download), so nothing counts twice.
        self.count_bytes = count_bytes

    def already_stored(self, path: str, size: int, sha256: str) -> bool:
        """True when an earlier run stored this exact file: same size, and its bytes re-hash to ``sha256``."""
        key = file_key(self.model_id, self.revision, validate_file_path(path))
        info = self.store.stat(key)
        if info is None or info.size != size or self.store.sha256(key) != sha256:
            return False
        self.files[path] = FileEntry(path=path, size=size, sha256=sha256)
        self.progress.add_bytes(size)
        self.progress.file_done()
        return True

    def store_stream(self, path: str, stream: BinaryIO, size: int, expected_sha256: str | None = None,
                     where: str = "") -> FileEntry:
        """Store ``size`` bytes from ``stream`` as ``path``; a hash or size mismatch deletes it and raises."""
        key = file_key(self.model_id, self.revision, validate_file_path(path))
        reader = HashingReader(stream, self.progress.add_bytes if self.count_bytes else None,
                               limit=size if size >= 0 else None)
        self.store.put_stream(key, reader, size)  # type: ignore[arg-type]
        actual = reader.hexdigest()
        if (expected_sha256 and actual != expected_sha256) or (size >= 0 and reader.size != size):
            with contextlib.suppress(Exception):
                self.store.delete_prefix(key)
            if size >= 0 and reader.size != size:
                raise ChecksumError(path, f"{size} bytes", f"{reader.size} bytes", where=where)
            raise ChecksumError(path, expected_sha256 or "", actual, where=where)
        entry = FileEntry(path=path, size=reader.size, sha256=actual)
        self.files[path] = entry
        self.progress.file_done()
        return entry

    def store_file(self, path: str, local: Path, expected_sha256: str | None = None, where: str = "") -> FileEntry:
        with open(local, "rb") as f:
            return self.store_stream(path, f, local.stat().st_size, expected_sha256, where)

    def commit(self, model_type: ModelType | None, source: dict[str, Any], *, aliases: list[str] | None = None,
               make_current: bool = True, created_at: str | None = None) -> tuple[Manifest, ModelRecord]:
        files = sorted(self.files.values(), key=lambda f: f.path)
        manifest = Manifest(model_id=self.model_id, revision=self.revision,
                            model_type=model_type or self.guess_type(), source=source, files=files)
        if created_at:
            manifest.created_at = created_at
        record = self.catalog.commit(manifest, make_current=make_current, aliases=aliases or ())
        return self.catalog.manifest(self.model_id, self.revision), record

    def guess_type(self) -> ModelType:
        """A best guess from the files, for sources that do not say (an explicit type always wins)."""
        names = set(self.files)
        if "modules.json" in names or "sentence_bert_config.json" in names:
            return "embedding"
        config: dict[str, Any] = {}
        if "config.json" in names:
            with contextlib.suppress(Exception):
                config = json.loads(self.store.get_bytes(file_key(self.model_id, self.revision, "config.json")))
        kind = str(config.get("model_type", "")).lower()
        if "whisper" in kind or "wav2vec" in kind:
            return "transcription"
        if "llava" in kind or "vision" in kind or "vl" in kind.split("_"):
            return "multimodal"
        if kind in {"bert", "roberta", "xlm-roberta", "mpnet", "nomic_bert"}:
            return "embedding"
        return "llm"
