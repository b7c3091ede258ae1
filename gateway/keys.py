"""User API keys: a small JSON file of SHA-256 digests that answers :class:`common.auth.UserKeys`.

An admin makes a key (``POST /admin/keys`` or ``model-service keys create``); the secret is in that one
answer and nowhere else: the file keeps its digest, a short prefix for telling keys apart in a list, and
the key's name, models and per-minute limits. Revoking sets ``revoked_at`` and drops the digest from the
lookup table at once, so the very next request with that key gets 401. Revoked keys stay in the file
(and the list) so the usage log's key ids keep a name.

The file is rewritten whole on every change through a temporary file and ``os.replace``: a crash
leaves the old file or the new one, never half of either. Lookups read only the in-memory table (a
dict hit per request, no file I/O); changes go through :meth:`KeyStore.create` / :meth:`KeyStore.revoke`,
which write in a worker thread under a lock and swap the table only once the file is safely written.

Several gateway replicas share keys through the shared state store (:mod:`gateway.shared_keys`): each
replica's local changes are announced through :attr:`KeyStore.on_change`, and what other replicas did
arrives through :meth:`KeyStore.merge`, which only ever adds keys and revocations (a revoked key
never comes back), so replicas converge whatever order the changes reach them in.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator

from common.auth import Principal, Role, digest, new_secret
from common.errors import NotFoundError

log = logging.getLogger(__name__)

FILE_VERSION = 1
# Characters of the secret kept for display: the "msp-" marker and six of its 43 random characters.
PREFIX_LENGTH = 10


class KeyRequest(BaseModel):
    """What an admin asks for: ``models`` None means every model; limits None mean unlimited."""

    name: str = Field(min_length=1, max_length=200)
    models: list[str] | None = Field(default=None, description="model ids this key may use; null: all")
    rpm: int | None = Field(default=None, ge=1, description="requests per minute; null: unlimited")
    tpm: int | None = Field(default=None, ge=1, description="tokens (prompt + completion) per minute")

    @field_validator("models")
    @classmethod
    def _models(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        cleaned = list(dict.fromkeys(m.strip() for m in value))
        if not cleaned or any(not m for m in cleaned):
            raise ValueError("models must name at least one model and no blank ones (null allows every model)")
        return cleaned


class KeyView(BaseModel):
    """One key as the list shows it: no secret and no digest."""

    object: str = "api_key"
    id: str
    name: str
    prefix: str
    models: list[str] | None = None
    rpm: int | None = None
    tpm: int | None = None
    created_at: str
    revoked_at: str | None = None


class CreatedKey(KeyView):
    """The answer to a creation: the only time the secret is shown."""

    key: str = Field(description="the secret; shown once, store it now")


class KeyListView(BaseModel):
    object: str = "list"
    data: list[KeyView]


@dataclass(frozen=True)
class StoredKey:
    """A key as the file keeps it."""

    id: str
    name: str
    prefix: str
    digest: str
    created_at: str
    models: tuple[str, ...] | None = None
    rpm: int | None = None
    tpm: int | None = None
    revoked_at: str | None = None

    def view(self) -> KeyView:
        return KeyView(id=self.id, name=self.name, prefix=self.prefix,
                       models=list(self.models) if self.models is not None else None, rpm=self.rpm,
                       tpm=self.tpm, created_at=self.created_at, revoked_at=self.revoked_at)

    def principal(self) -> Principal:
        models = frozenset(self.models) if self.models is not None else None
        return Principal(key_id=self.id, role=Role.USER, name=self.name, models=models, rpm=self.rpm, tpm=self.tpm)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "prefix": self.prefix, "digest": self.digest,
                "models": list(self.models) if self.models is not None else None, "rpm": self.rpm,
                "tpm": self.tpm, "created_at": self.created_at, "revoked_at": self.revoked_at}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> StoredKey:
        models = row.get("models")
        return cls(id=str(row["id"]), name=str(row.get("name", "")), prefix=str(row.get("prefix", "")),
                   digest=str(row["digest"]), created_at=str(row.get("created_at", "")),
                   models=tuple(models) if models is not None else None, rpm=row.get("rpm"),
                   tpm=row.get("tpm"), revoked_at=row.get("revoked_at"))


class KeyFileError(RuntimeError):
    """The key file exists but cannot be read as a key file: start-up stops rather than lock everyone out."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class KeyStore:
    """The keys of one gateway, loaded from ``path`` at start-up and kept in memory."""

    path: Path
    _keys: tuple[StoredKey, ...] = ()
    _live: dict[str, Principal] = field(default_factory=dict)  # digest -> principal, live keys only
    _ids: dict[str, str] = field(default_factory=dict)  # digest -> id, every key
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # How many changes this replica made (creations, revocations), and who to tell about each.
    changes: int = 0
    on_change: Callable[[], None] | None = None

    def load(self) -> None:
        """Read the file if there is one (none yet: no user keys)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._swap(())
            return
        try:
            rows = json.loads(text)["keys"]
            keys = tuple(StoredKey.from_json(row) for row in rows)
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyFileError(f"the key file {self.path} is not a valid key file ({exc}); fix or move it") from None
        self._swap(keys)
        log.info("loaded %d user key(s) (%d live) from %s", len(keys), len(self._live), self.path)

    def lookup(self, key_digest: str) -> Principal | None:
        """:class:`common.auth.UserKeys`: the live key with this digest, or None."""
        return self._live.get(key_digest)

    def known_id(self, key_digest: str) -> str | None:
        """The id of any key with this digest, revoked ones included (for the audit log)."""
        return self._ids.get(key_digest)

    def list(self) -> list[KeyView]:
        return [k.view() for k in self._keys]

    async def create(self, request: KeyRequest) -> CreatedKey:
        secret = new_secret()
        key = StoredKey(id=f"key_{secrets.token_hex(8)}", name=request.name, prefix=secret[:PREFIX_LENGTH],
                        digest=digest(secret), created_at=_now(),
                        models=tuple(request.models) if request.models is not None else None,
                        rpm=request.rpm, tpm=request.tpm)
        async with self._lock:
            await self._commit((*self._keys, key))
        self._changed()
        return CreatedKey(**key.view().model_dump(), key=secret)

    async def revoke(self, key_id: str) -> KeyView:
        """Revoke ``key_id`` (again: a no-op that answers the first revocation); unknown: 404."""
        async with self._lock:
            found = next((k for k in self._keys if k.id == key_id), None)
            if found is None:
                raise NotFoundError(f"No API key with id '{key_id}'.", param="key_id", code="key_not_found")
            if found.revoked_at is not None:
                return found.view()
            revoked = replace(found, revoked_at=_now())
            await self._commit(tuple(revoked if k.id == key_id else k for k in self._keys))
        self._changed()
        return revoked.view()

    def stored(self) -> tuple[StoredKey, ...]:
        """Every key as the file keeps it (digests included): what this replica shares with others."""
        return self._keys

    async def merge(self, incoming: Iterable[StoredKey]) -> int:
        """Take in keys made or revoked elsewhere; answers how many keys changed here (0: no write)."""
        async with self._lock:
            keys, changed = merged(self._keys, incoming)
            if changed:
                await self._commit(keys)
                log.info("took in %d key change(s) from the other gateways", changed)
        return changed

    def _changed(self) -> None:
        self.changes += 1
        if self.on_change is not None:
            self.on_change()

    async def _commit(self, keys: tuple[StoredKey, ...]) -> None:
        """Write the file (in a thread), then serve the new table; a failed write changes nothing."""
        await asyncio.to_thread(write_atomically, self.path, keys)
        self._swap(keys)

    def _swap(self, keys: tuple[StoredKey, ...]) -> None:
        self._keys = keys
        self._live = {k.digest: k.principal() for k in keys if k.revoked_at is None}
        self._ids = {k.digest: k.id for k in keys}


def merged(local: tuple[StoredKey, ...], incoming: Iterable[StoredKey]) -> tuple[tuple[StoredKey, ...], int]:
    """``local`` with the keys it lacks added and the revocations it lacks applied; and how many changed.

    Keys are never removed and revocations never undone, so merging is order-free: every replica ends
    with the same table once it has seen every change."""
    by_id = {k.id: k for k in local}
    changed = 0
    for key in incoming:
        mine = by_id.get(key.id)
        if mine is None:
            by_id[key.id] = key
        elif key.revoked_at is not None and mine.revoked_at is None:
            by_id[key.id] = replace(mine, revoked_at=key.revoked_at)
        else:
            continue
        changed += 1
    if not changed:
        return local, 0
    known = {k.id for k in local}
    added = sorted((k for k in by_id.values() if k.id not in known), key=lambda k: (k.created_at, k.id))
    return (*(by_id[k.id] for k in local), *added), changed


def write_atomically(path: Path, keys: tuple[StoredKey, ...]) -> None:
    """The whole file through a temporary file beside it and ``os.replace`` (owner-only permissions)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = json.dumps({"version": FILE_VERSION, "keys": [k.to_json() for k in keys]}, indent=1)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
