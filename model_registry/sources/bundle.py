"""Bundles: one tar file that carries a model (one or all revisions) into an air-gapped site.

Layout inside the tar, in this order so an import can stream it front to back:
``bundle.json`` (format, model id, revisions), ``model.json`` (type, aliases), then per revision
``revisions/<rev>/manifest.json`` followed by ``revisions/<rev>/files/<path>``. Plain tar (no
compression: weights do not compress). Export re-verifies each file's sha256 as it reads it; import
verifies every file against its manifest before the revision is committed, and discards a revision
that does not verify.
"""

from __future__ import annotations

import contextlib
import json
import os
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

from common.errors import InvalidRequestError
from model_registry.catalog import Catalog, file_key
from model_registry.errors import ChecksumError
from model_registry.ids import validate_file_path, validate_model_id, validate_revision
from model_registry.ingest import Progress, RevisionWriter
from model_registry.records import FileEntry, Manifest, ModelRecord, utc_now
from model_registry.storage import ChunkReader, HashingReader

FORMAT = "model-registry-bundle"
VERSION = 1


def export_bundle(catalog: Catalog, model_id: str, out: Path, *, revision: str | None = None,
                  all_revisions: bool = False, progress: Progress | None = None) -> list[str]:
    """Write the bundle to ``out`` (via a temp file and rename). Returns the revisions exported."""
    record = catalog.get_model(model_id)
    revisions = ([r.revision for r in record.revisions] if all_revisions
                 else [catalog.resolve(model_id, revision)])
    manifests = [catalog.manifest(model_id, rev) for rev in revisions]
    progress = progress or Progress()
    progress.set_totals(sum(len(m.files) for m in manifests), sum(m.total_size for m in manifests))
    record = record.model_copy(update={
        "revisions": [r for r in record.revisions if r.revision in revisions],
        "aliases": {a: r for a, r in record.aliases.items() if r in revisions}})
    out = Path(out).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            head = {"format": FORMAT, "version": VERSION, "model_id": model_id, "revisions": revisions,
                    "created_at": utc_now()}
            _add_json(tar, "bundle.json", head)
            _add_json(tar, "model.json", record.model_dump())
            for manifest in manifests:
                _add_revision(catalog, tar, manifest, progress)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return revisions


def _add_json(tar: tarfile.TarFile, name: str, obj: object) -> None:
    data = json.dumps(obj, indent=1, sort_keys=True).encode()
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    tar.addfile(info, BytesIO(data))


def _add_revision(catalog: Catalog, tar: tarfile.TarFile, manifest: Manifest, progress: Progress) -> None:
    rev = manifest.revision
    _add_json(tar, f"revisions/{rev}/manifest.json", manifest.model_dump())
    for entry in manifest.files:
        info = tarfile.TarInfo(f"revisions/{rev}/files/{entry.path}")
        info.size, info.mtime, info.mode = entry.size, int(time.time()), 0o644
        reader = HashingReader(ChunkReader(catalog.store.iter_chunks(file_key(manifest.model_id, rev, entry.path))),
                               progress.add_bytes)
        tar.addfile(info, reader)  # type: ignore[arg-type]
        if reader.hexdigest() != entry.sha256:
            raise ChecksumError(entry.path, entry.sha256, reader.hexdigest(), where=f"store, revision {rev}")
        progress.file_done()


class _BundleImport:
    """State of one streaming import: the manifest being filled and the writers per revision."""

    def __init__(self, catalog: Catalog, progress: Progress) -> None:
        self.catalog = catalog
        self.progress = progress
        self.model_id: str | None = None
        self.record: ModelRecord | None = None
        self.manifests: dict[str, Manifest] = {}
        self.writers: dict[str, RevisionWriter] = {}
        self.skipped: set[str] = set()

    def member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = member.name
        if member.isdir():
            return
        if not member.isfile():
            raise InvalidRequestError(f"Bundle member '{name}' is not a regular file.", param="bundle")
        if name == "bundle.json":
            head = json.loads(_read(tar, member))
            if head.get("format") != FORMAT or head.get("version") != VERSION:
                raise InvalidRequestError("Not a model registry bundle (bad bundle.json).", param="bundle")
            self.model_id = validate_model_id(head.get("model_id", ""))
            return
        if self.model_id is None:
            raise InvalidRequestError("Bundle does not start with bundle.json.", param="bundle")
        if name == "model.json":
            self.record = ModelRecord.model_validate(json.loads(_read(tar, member)))
            return
        parts = name.split("/", 3)
        if len(parts) < 3 or parts[0] != "revisions":
            raise InvalidRequestError(f"Unexpected bundle member '{name}'.", param="bundle")
        rev = validate_revision(parts[1])
        if parts[2] == "manifest.json" and len(parts) == 3:
            self._manifest(rev, Manifest.model_validate(json.loads(_read(tar, member))))
        elif parts[2] == "files" and len(parts) == 4:
            self._file(tar, member, rev, validate_file_path(parts[3]))
        else:
            raise InvalidRequestError(f"Unexpected bundle member '{name}'.", param="bundle")

    def _manifest(self, rev: str, manifest: Manifest) -> None:
        if manifest.model_id != self.model_id or manifest.revision != rev:
            raise InvalidRequestError(f"Manifest of revision '{rev}' names another model or revision.",
                                      param="bundle")
        self.manifests[rev] = manifest
        self.progress.set_totals(self.progress.files_total + len(manifest.files), self.progress.bytes_total)
        if self.catalog.is_complete(manifest.model_id, rev):
            self.skipped.add(rev)  # already here (and verified when it was stored)
            return
        self.writers[rev] = RevisionWriter(self.catalog, manifest.model_id, rev, self.progress)

    def _file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, rev: str, path: str) -> None:
        manifest = self.manifests.get(rev)
        entry = next((f for f in manifest.files if f.path == path), None) if manifest else None
        if entry is None:
            raise InvalidRequestError(f"Bundle file '{member.name}' is not in its revision's manifest.",
                                      param="bundle")
        if rev in self.skipped:
            self.progress.add_bytes(entry.size)
            self.progress.file_done()
            return
        if member.size != entry.size:
            raise ChecksumError(path, f"{entry.size} bytes", f"{member.size} bytes", where=f"bundle, revision {rev}")
        stream = tar.extractfile(member)
        assert stream is not None
        self.writers[rev].store_stream(path, stream, member.size, entry.sha256, where=f"bundle, revision {rev}")

    def commit(self) -> list[Manifest]:
        out = []
        for rev, writer in self.writers.items():
            manifest = self.manifests[rev]
            missing = {f.path for f in manifest.files} - set(writer.files)
            if missing:
                raise InvalidRequestError(f"Bundle revision '{rev}' lacks {len(missing)} file(s), e.g. "
                                          f"'{sorted(missing)[0]}'.", param="bundle")
            _check_entries(manifest.files, writer.files)
            done, _ = writer.commit(manifest.model_type, manifest.source, make_current=False,
                                    created_at=manifest.created_at)
            out.append(done)
        assert self.model_id is not None
        aliases = dict(self.record.aliases) if self.record else {}
        for alias, rev in sorted(aliases.items(), key=lambda a: a[0] != "current"):
            with contextlib.suppress(Exception):
                self.catalog.set_alias(self.model_id, alias, rev)
        return out + [self.catalog.manifest(self.model_id, r) for r in sorted(self.skipped)]


def _check_entries(expected: list[FileEntry], stored: dict[str, FileEntry]) -> None:
    for entry in expected:
        got = stored[entry.path]
        if got.sha256 != entry.sha256:
            raise ChecksumError(entry.path, entry.sha256, got.sha256, where="bundle")


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int = 64 * 1024 * 1024) -> bytes:
    if member.size > limit:
        raise InvalidRequestError(f"Bundle member '{member.name}' is too large for metadata.", param="bundle")
    stream = tar.extractfile(member)
    assert stream is not None
    return stream.read()


def import_bundle(catalog: Catalog, bundle: Path, progress: Progress | None = None) -> list[Manifest]:
    """Stream the tar into the store; each revision is committed only when all its files verified."""
    bundle = Path(bundle).expanduser()
    if not bundle.is_file():
        raise InvalidRequestError(f"The bundle '{bundle}' is not a file.", param="path")
    progress = progress or Progress()
    progress.set_totals(0, bundle.stat().st_size)
    state = _BundleImport(catalog, progress)
    try:
        with tarfile.open(bundle, mode="r|*") as tar:
            for member in tar:
                state.member(tar, member)
        if state.model_id is None:
            raise InvalidRequestError("The bundle is empty.", param="bundle")
        return state.commit()
    except (tarfile.TarError, json.JSONDecodeError, ValueError) as exc:
        _discard(state)
        raise InvalidRequestError(f"The bundle '{bundle.name}' is not readable: {exc}", param="bundle") from exc
    except BaseException:
        _discard(state)
        raise


def _discard(state: _BundleImport) -> None:
    if state.model_id is None:
        return
    for rev in state.writers:
        with contextlib.suppress(Exception):
            state.catalog.discard_partial(state.model_id, rev)
