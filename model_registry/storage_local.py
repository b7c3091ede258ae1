"""Local-folder backend: one file per key under a root folder.

Writes go to a temp file in ``<root>/.tmp`` (same file system) and are moved into place with
``os.replace``, so a crash never leaves a half-written object visible under its key.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from model_registry.errors import StorageError
from model_registry.storage import CHUNK, ObjectInfo, Storage

TMP = ".tmp"


class LocalStorage(Storage):
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()

    def describe(self) -> str:
        return f"local folder {self.root}"

    def check(self) -> None:
        try:
            (self.root / TMP).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"Cannot create the model store folder {self.root}: {exc.strerror}.") from exc
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"The model store folder {self.root} is not writable.")

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if path != self.root and self.root not in path.parents:  # keys are validated; this is a backstop
            raise KeyError(key)
        return path

    def put_stream(self, key: str, stream: BinaryIO, size: int) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        (self.root / TMP).mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root / TMP, prefix="put-")
        try:
            with os.fdopen(fd, "wb") as out:
                left = size
                while left != 0:
                    chunk = stream.read(CHUNK if left < 0 else min(CHUNK, left))
                    if not chunk:
                        break
                    out.write(chunk)
                    if left > 0:
                        left -= len(chunk)
                if size >= 0 and left != 0:
                    raise OSError(f"stream ended {left} bytes early while writing {key}")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def iter_chunks(self, key: str, offset: int = 0, length: int | None = None,
                    chunk_size: int = CHUNK) -> Iterator[bytes]:
        path = self._path(key)
        try:
            f = open(path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise KeyError(key) from exc
        return self._chunks(f, offset, length, chunk_size)

    @staticmethod
    def _chunks(f: BinaryIO, offset: int, length: int | None, chunk_size: int) -> Iterator[bytes]:
        try:
            f.seek(offset)
            left = length
            while left is None or left > 0:
                chunk = f.read(chunk_size if left is None else min(chunk_size, left))
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk
        finally:
            f.close()

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            path = self._path(key)
            if not path.is_file():
                return None
            return ObjectInfo(key, path.stat().st_size)
        except (KeyError, OSError):
            return None

    def list(self, prefix: str, recursive: bool = True) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not prefix.endswith("/") and prefix:
            base = base.parent
        if not base.is_dir():
            return []
        out: list[str] = []
        if recursive:
            for dirpath, dirnames, filenames in os.walk(base):
                rel = Path(dirpath).relative_to(self.root).as_posix()
                if rel == ".":
                    dirnames[:] = [d for d in dirnames if d != TMP]
                for name in filenames:
                    key = name if rel == "." else f"{rel}/{name}"
                    if key.startswith(prefix):
                        out.append(key)
        else:
            for entry in base.iterdir():
                rel = entry.relative_to(self.root).as_posix()
                if rel == TMP:
                    continue
                key = rel + "/" if entry.is_dir() else rel
                if key.startswith(prefix):
                    out.append(key)
        return sorted(out)

    def delete_prefix(self, prefix: str) -> int:
        path = self._path(prefix.rstrip("/")) if prefix.strip("/") else None
        if path is None or path == self.root:
            raise ValueError("refusing to delete the whole store")
        if not prefix.endswith("/"):
            if path.is_file():
                path.unlink()
                self._prune(path.parent)
                return 1
            return 0
        if path.is_dir():
            count = sum(len(files) for _, _, files in os.walk(path))
            shutil.rmtree(path)
            self._prune(path.parent)
            return count
        return 0

    def _prune(self, folder: Path) -> None:
        """Remove empty parent folders so an org with no models left does not linger in listings."""
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent
