"""The usage and audit log: one JSON line per request, written off the event loop, rotated by size.

Each line says who (key id, client address), what (endpoint, model, the replica that answered), how
it went (status, error code, stream or not, latency, time to first token) and what it cost (prompt,
completion and total tokens as the worker reported them). Prompts and answers are left out unless
``GATEWAY_USAGE_LOG_CONTENT=true``. Requests refused before routing (a wrong key, a key over its
limit) get a line too, and so do key creations and revocations, so the file doubles as an audit trail.

The request path only formats a line and puts it on a queue (as stdlib ``QueueHandler`` does); a
``QueueListener`` thread owns the ``RotatingFileHandler`` and does the disk I/O. ``GET /usage`` reads
the current file and the rotated ones in a thread and sums them up per key and per model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from logging.handlers import QueueListener, RotatingFileHandler
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
_RECORD_NAME = "gateway.usage"


def utc_iso(timestamp: float) -> str:
    """``2026-01-31T12:00:00.123Z``: sortable, and what ``since`` / ``until`` are compared against."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class PrivateRotatingFile(RotatingFileHandler):
    """A ``RotatingFileHandler`` whose files only their owner may read: they name keys and clients
    (and hold prompts when content logging is on), whatever the process umask."""

    def _open(self) -> Any:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


class UsageLog:
    """One gateway's log file; :meth:`start` and :meth:`stop` belong to the app's lifespan."""

    def __init__(self, path: Path, *, max_bytes: int, backup_count: int, content: bool = False,
                 enabled: bool = True) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self.content = content  # whether prompts and answers go into the lines
        self.enabled = enabled
        self._queue: queue.Queue[logging.LogRecord] = queue.Queue()
        self._listener: QueueListener | None = None
        self._file: RotatingFileHandler | None = None
        # Also handed every line (the shared usage rollup, when several gateways share state).
        self.tap: Callable[[dict[str, Any]], None] | None = None

    def start(self) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._file = PrivateRotatingFile(self.path, maxBytes=self.max_bytes, backupCount=self.backup_count,
                                         encoding="utf-8", delay=True)
        self._file.setFormatter(logging.Formatter("%(message)s"))
        self._listener = QueueListener(self._queue, self._file, respect_handler_level=False)
        self._listener.start()

    def stop(self) -> None:
        """Write out what is queued, then close the file."""
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def write(self, entry: dict[str, Any]) -> None:
        """Queue one line: a ``json.dumps`` of a small dict, a bare record and a queue put.

        The record goes straight onto the listener's queue (what ``QueueHandler`` would do, without a
        logger's caller lookup and the handler's copy of an already formatted record)."""
        if self.tap is not None:
            self.tap(entry)
        if self._listener is not None:
            line = json.dumps(entry, separators=(",", ":"), ensure_ascii=False)
            self._queue.put_nowait(logging.LogRecord(_RECORD_NAME, logging.INFO, "", 0, line, None, None))

    async def flush(self) -> None:
        """Wait (in a thread) until every queued line is on disk, so a summary sees all of them."""
        if self._listener is not None:
            await asyncio.to_thread(self._queue.join)

    def files(self) -> list[Path]:
        """The rotated files, oldest first, then the current one (those that exist)."""
        rotated = [self.path.with_name(f"{self.path.name}.{n}") for n in range(self.backup_count, 0, -1)]
        return [p for p in (*rotated, self.path) if p.is_file()]

    async def summary(self, since: datetime | None, until: datetime | None,
                      key_id: str | None = None) -> dict[str, Any]:
        await self.flush()
        return await asyncio.to_thread(summarize, self.files(), since, until, key_id)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else utc_iso(moment.timestamp())


def read_lines(paths: list[Path]) -> Iterator[dict[str, Any]]:
    """Every well-formed line of ``paths``; a torn or foreign line is skipped, not fatal."""
    for path in paths:
        try:
            with path.open(encoding="utf-8", errors="replace") as lines:
                for line in lines:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(entry, dict):
                        yield entry
        except FileNotFoundError:  # rotated away between listing and opening
            continue


def is_request_line(entry: dict[str, Any]) -> bool:
    """A request's line, not an audit line of a key change (those have no ``endpoint``, or an ``event``)."""
    return "endpoint" in entry and entry.get("event") is None


def newest_requests(paths: list[Path], limit: int, key_id: str | None = None) -> list[dict[str, Any]]:
    """The last ``limit`` request lines of ``paths`` (oldest file first; only ``key_id``'s when given),
    newest first. Files are read
    newest first and lines from the end, so a view of the latest requests parses only those lines and
    never opens the older rotated files once it has enough."""
    out: list[dict[str, Any]] = []
    for path in reversed(paths):
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:  # rotated away between listing and opening
            continue
        for line in reversed(lines):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and is_request_line(entry) and key_id in (None, entry.get("key_id")):
                out.append(entry)
                if len(out) == limit:
                    return out
    return out


def empty_row() -> dict[str, int]:
    return {"requests": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def add_line(row: dict[str, int], entry: dict[str, Any]) -> None:
    row["requests"] += 1
    status = entry.get("status")
    if isinstance(status, int) and status >= 400:
        row["errors"] += 1
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = entry.get(key)
        if isinstance(value, int):
            row[key] += value


def summarize(paths: list[Path], since: datetime | None, until: datetime | None,
              key_id: str | None = None) -> dict[str, Any]:
    """Requests, errors (status >= 400) and tokens in ``[since, until)`` (only ``key_id``'s when given):
    in all, by key and by model.

    Only request lines count (audit lines of key changes have no ``endpoint``).
    """
    low, high = _iso(since), _iso(until)
    total = empty_row()
    by_key: dict[str, dict[str, int]] = {}
    by_model: dict[str, dict[str, int]] = {}
    for entry in read_lines(paths):
        moment = entry.get("time")
        if not isinstance(moment, str) or not is_request_line(entry):
            continue
        if (low is not None and moment < low) or (high is not None and moment >= high):
            continue
        if key_id is not None and entry.get("key_id") != key_id:
            continue
        add_line(total, entry)
        add_line(by_key.setdefault(str(entry.get("key_id") or "-"), empty_row()), entry)
        add_line(by_model.setdefault(str(entry.get("model") or "-"), empty_row()), entry)
    return {"object": "usage.summary", "since": low, "until": high, **total,
            "by_key": dict(sorted(by_key.items())), "by_model": dict(sorted(by_model.items()))}
