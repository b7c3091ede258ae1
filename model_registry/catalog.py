"""The registry's view of the store: models, revisions, manifests and aliases.

Layout per model id: ``<id>/model.json`` and ``<id>/revisions/<rev>/{manifest.json,files/<path>}``.
A revision exists for readers only once its manifest says ``complete: true``; ``model.json`` is
updated after that, so a crash between the two leaves a complete revision that ``repair`` can list.
Read-modify-write of ``model.json`` is serialised by one lock per catalog (one per app or CLI run).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from common.errors import ModelNotFoundError
from model_registry.errors import RevisionNotFoundError
from model_registry.ids import validate_alias, validate_model_id, validate_revision
from model_registry.records import Manifest, ModelRecord, RevisionSummary, utc_now
from model_registry.storage import Storage

INTERNAL_PREFIXES = ("_", ".")


def model_key(model_id: str) -> str:
    return f"{model_id}/model.json"


def revision_prefix(model_id: str, revision: str) -> str:
    return f"{model_id}/revisions/{revision}/"


def manifest_key(model_id: str, revision: str) -> str:
    return revision_prefix(model_id, revision) + "manifest.json"


def file_key(model_id: str, revision: str, path: str) -> str:
    return revision_prefix(model_id, revision) + "files/" + path


class Catalog:
    def __init__(self, store: Storage) -> None:
        self.store = store
        self._lock = threading.Lock()

    # Reading.
    def list_models(self) -> list[ModelRecord]:
        """Every model with a ``model.json``, found with two delimiter listings (ids have <= 2 parts)."""
        out: list[ModelRecord] = []
        for top in self.store.list("", recursive=False):
            if not top.endswith("/") or top.startswith(INTERNAL_PREFIXES):
                continue
            children = self.store.list(top, recursive=False)
            candidates = [top[:-1]] if f"{top}model.json" in children else []
            candidates += [c[:-1] for c in children if c.endswith("/") and c != f"{top}revisions/"]
            for model_id in candidates:
                record = self.find_model(model_id)
                if record is not None:
                    out.append(record)
        return sorted(out, key=lambda r: r.id)

    def find_model(self, model_id: str) -> ModelRecord | None:
        data = self.store.get_json(model_key(model_id))
        return ModelRecord.model_validate(data) if data else None

    def get_model(self, model_id: str) -> ModelRecord:
        validate_model_id(model_id)
        record = self.find_model(model_id)
        if record is None:
            raise ModelNotFoundError(f"The model '{model_id}' is not in the registry.", param="model_id")
        return record

    def resolve(self, model_id: str, ref: str | None = None) -> str:
        """An alias (default ``current``) or a revision name -> a complete revision name."""
        record = self.get_model(model_id)
        ref = validate_revision(ref or "current")
        revision = record.aliases.get(ref, ref)
        if record.revision(revision) is None:
            raise RevisionNotFoundError(f"The model '{model_id}' has no ready revision or alias '{ref}'.",
                                        param="revision")
        return revision

    def manifest(self, model_id: str, revision: str) -> Manifest:
        """The complete manifest of a revision; incomplete or missing ones are a 404."""
        data = self.store.get_json(manifest_key(model_id, revision))
        manifest = Manifest.model_validate(data) if data else None
        if manifest is None or not manifest.complete:
            raise RevisionNotFoundError(f"The model '{model_id}' has no ready revision '{revision}'.",
                                        param="revision")
        return manifest

    def is_complete(self, model_id: str, revision: str) -> bool:
        data = self.store.get_json(manifest_key(model_id, revision))
        return bool(data and data.get("complete"))

    # Writing.
    def commit(self, manifest: Manifest, *, make_current: bool = True,
               aliases: Iterable[str] = ()) -> ModelRecord:
        """Write the manifest with ``complete: true`` (the last object of the revision), then list it."""
        manifest = manifest.model_copy(update={
            "complete": True, "total_size": sum(f.size for f in manifest.files)})
        self.store.put_json(manifest_key(manifest.model_id, manifest.revision), manifest.model_dump())
        with self._lock:
            record = self.find_model(manifest.model_id) or ModelRecord(id=manifest.model_id)
            summary = RevisionSummary(revision=manifest.revision, created_at=manifest.created_at,
                                      size=manifest.total_size, files=len(manifest.files),
                                      source=str(manifest.source.get("kind", "unknown")))
            record.revisions = [r for r in record.revisions if r.revision != manifest.revision] + [summary]
            record.type = manifest.model_type or record.type
            if make_current or "current" not in record.aliases:
                record.aliases["current"] = manifest.revision
            for alias in aliases:
                record.aliases[validate_alias(alias)] = manifest.revision
            self._save(record)
            return record

    def set_alias(self, model_id: str, alias: str, revision: str) -> ModelRecord:
        validate_alias(alias)
        validate_revision(revision)
        with self._lock:
            record = self.get_model(model_id)
            target = record.aliases.get(revision, revision) if revision not in {
                r.revision for r in record.revisions} else revision
            if record.revision(target) is None:
                raise RevisionNotFoundError(f"The model '{model_id}' has no ready revision '{revision}'.",
                                            param="revision")
            record.aliases[alias] = target
            self._save(record)
            return record

    def delete_model(self, model_id: str) -> int:
        """Drop ``model.json`` first (the model vanishes at once), then every revision's objects."""
        with self._lock:
            self.get_model(model_id)
            self.store.delete_prefix(model_key(model_id))
        return self.store.delete_prefix(f"{model_id}/revisions/")

    def delete_revision(self, model_id: str, revision: str) -> ModelRecord | None:
        """Unlist the revision, drop its manifest, then its files. Aliases to it move or go."""
        validate_revision(revision)
        with self._lock:
            record = self.get_model(model_id)
            if record.revision(revision) is None and not self.store.list(revision_prefix(model_id, revision)):
                raise RevisionNotFoundError(f"The model '{model_id}' has no revision '{revision}'.",
                                            param="revision")
            record.revisions = [r for r in record.revisions if r.revision != revision]
            record.aliases = {a: r for a, r in record.aliases.items() if r != revision}
            if record.revisions and "current" not in record.aliases:
                record.aliases["current"] = max(record.revisions, key=lambda r: r.created_at).revision
            if record.revisions:
                self._save(record)
            else:
                self.store.delete_prefix(model_key(model_id))
        self.store.delete_prefix(manifest_key(model_id, revision))
        self.store.delete_prefix(revision_prefix(model_id, revision))
        return record if record.revisions else None

    def discard_partial(self, model_id: str, revision: str) -> int:
        """Delete a revision that never completed (a failed or abandoned job); complete ones are kept."""
        if self.is_complete(model_id, revision):
            return 0
        return self.store.delete_prefix(revision_prefix(model_id, revision))

    def _save(self, record: ModelRecord) -> None:
        record.updated_at = utc_now()
        self.store.put_json(model_key(record.id), record.model_dump())
