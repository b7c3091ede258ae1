"""One small object-store interface with two backends: a local folder and S3 (MinIO, SeaweedFS).

Keys are ``/``-separated strings already validated by ``ids``. Every backend makes a put atomic (a
reader sees the old object, or no object, or the whole new one), which is what lets the registry keep
all of its state in the store and survive crashes: a manifest with ``complete: true`` is written last.
All methods block; async code calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from common.settings import refuse_placeholder_secrets
from model_registry.settings import ModelRegistrySettings

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


class Storage(ABC):
    """Blocking object store. Subclasses implement the six primitives; JSON helpers come for free."""

    @abstractmethod
    def check(self) -> None:
        """Verify reachability and credentials; create the bucket/folder if missing. Raises StorageError."""

    @abstractmethod
    def put_stream(self, key: str, stream: BinaryIO, size: int) -> None:
        """Store ``size`` bytes read from ``stream`` (``size=-1``: unknown, read to EOF) atomically."""

    @abstractmethod
    def iter_chunks(self, key: str, offset: int = 0, length: int | None = None,
                    chunk_size: int = CHUNK) -> Iterator[bytes]:
        """The object's bytes (or a range of them). Raises ``KeyError`` if the object is missing."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """Size of one object, or None when it does not exist."""

    @abstractmethod
    def list(self, prefix: str, recursive: bool = True) -> list[str]:
        """Keys under ``prefix``; non-recursive also yields sub-"folders" (ending in ``/``)."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix`` (or the one object named ``prefix``); return the count."""

    def describe(self) -> str:
        """Where the store is, for logs and ``/health`` (never a secret)."""
        return type(self).__name__

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections."""

    # Conveniences built on the primitives.
    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def put_bytes(self, key: str, data: bytes) -> None:
        import io

        self.put_stream(key, io.BytesIO(data), len(data))

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.iter_chunks(key))

    def put_json(self, key: str, obj: Any) -> None:
        self.put_bytes(key, json.dumps(obj, indent=1, sort_keys=True).encode())

    def get_json(self, key: str) -> Any | None:
        """The decoded object, or None when it does not exist."""
        try:
            return json.loads(self.get_bytes(key))
        except KeyError:
            return None

    def sha256(self, key: str) -> str:
        """Hash an object by reading it back: how stored files are re-verified."""
        digest = hashlib.sha256()
        for chunk in self.iter_chunks(key):
            digest.update(chunk)
        return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a local file, read in chunks (the stdlib's ``file_digest``)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class HashingReader:
    """Wraps a binary stream: hashes (sha256) and counts what is read, and reports progress.

    Hashing while the store reads means every byte is read from the source exactly once.
    """

    def __init__(self, stream: BinaryIO, on_bytes: Callable[[int], None] | None = None,
                 limit: int | None = None) -> None:
        self._stream = stream
        self._on_bytes = on_bytes
        self._left = limit
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        if self._left is not None:
            n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._stream.read(n)
        if data:
            self.digest.update(data)
            self.size += len(data)
            if self._left is not None:
                self._left -= len(data)
            if self._on_bytes:
                self._on_bytes(len(data))
        return data

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


class ChunkReader:
    """A file-like ``read(n)`` over an iterator of byte chunks (an object being streamed out of the store)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buffer) < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if n < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data


def open_storage(settings: ModelRegistrySettings) -> Storage:
    """The backend the settings name; nothing is contacted until ``check()``."""
    if settings.storage_backend == "s3":
        from model_registry.storage_s3 import S3Storage

        secret = settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None
        refuse_placeholder_secrets({"MINIO_SVC_PASSWORD": secret})

        return S3Storage.from_settings(settings)
    from model_registry.storage_local import LocalStorage

    return LocalStorage(settings.local_root)
