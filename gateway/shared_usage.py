"""Usage summed across gateway replicas: per-minute rollups in the shared state store.

Every replica still writes its own usage log (the full record of each request). Beside it, each
request line is added into an in-memory rollup of its minute (requests, errors, tokens: in all, by key
and by model), and a background task adds those counts into one store hash per minute every
:data:`FLUSH_S` (one pipelined round trip, whatever the request rate). ``GET /usage`` on any replica
then sums the store's minutes, so it covers every replica's requests up to the last flush; the
replica answering flushes its own first.

Windows are whole minutes: ``since`` counts from the start of its minute and ``until`` up to the end
of the minute it falls in. Minutes are kept ``GATEWAY_REDIS_USAGE_RETENTION_DAYS``. A store that
cannot be reached keeps the counts here until it answers (a week of minutes at most); meanwhile
``GET /usage`` answers from this replica's own log and says so (``"scope": "this gateway"``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError

from gateway.shared_state import SharedStore, cancel, run_every
from gateway.usage import add_line, empty_row, is_request_line, utc_iso

log = logging.getLogger(__name__)

FLUSH_S = 0.2
MAX_PENDING_MINUTES = 7 * 24 * 60
Summary = dict[str, Any]


def minute_of(moment: str) -> int:
    """The Unix minute of a usage line's ``time`` (``2026-01-31T12:00:00.123Z``)."""
    return int(datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp() // 60)


def line_counts(entry: dict[str, Any]) -> Counter[str]:
    """One request line as hash fields: ``requests``, ``key:<id>:requests``, ``model:<id>:requests``, ..."""
    row = empty_row()
    add_line(row, entry)
    out: Counter[str] = Counter()
    for scope in ("", f"key:{entry.get('key_id') or '-'}:", f"model:{entry.get('model') or '-'}:"):
        out.update({scope + name: value for name, value in row.items() if value})
    return out


def add_fields(summary: Summary, fields: dict[str, str]) -> None:
    """Add one minute's hash into a summary (``model:`` ids may hold ``:``; counter names never do)."""
    for field, text in fields.items():
        where, _, name = field.rpartition(":")
        if name not in summary:
            continue
        if not where:
            summary[name] += int(text)
            continue
        kind, _, ident = where.partition(":")
        table = summary["by_key"] if kind == "key" else summary["by_model"] if kind == "model" else None
        if table is not None:
            table.setdefault(ident, empty_row())[name] += int(text)


class UsageRollup:
    """This replica's not-yet-flushed minutes, the flush loop, and the summary over the store."""

    def __init__(self, store: SharedStore, retention_days: int) -> None:
        self.store = store
        self.retention_s = retention_days * 86400
        self._index = store.name("usage", "minutes")
        self._pending: dict[int, Counter[str]] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, entry: dict[str, Any]) -> None:
        """Count one usage-log line (audit lines of key changes are not requests and are left out)."""
        moment = entry.get("time")
        if isinstance(moment, str) and is_request_line(entry):
            self._pending.setdefault(minute_of(moment), Counter()).update(line_counts(entry))

    def start(self) -> None:
        self._task = run_every(FLUSH_S, self.flush, "shared-usage-flush")

    async def stop(self) -> None:
        """Stop the loop and flush what is left (once; a down store loses it, the log still has it)."""
        await cancel(self._task)
        self._task = None
        await self.flush()

    async def flush(self) -> None:
        """Add the pending minutes into the store; on failure keep them for the next try."""
        if not self._pending or not self.store.available:
            return
        pending, self._pending = self._pending, {}
        pipe = self.store.redis.pipeline(transaction=False)
        for minute, counts in pending.items():
            name = self.store.name("usage", str(minute))
            for field, value in counts.items():
                pipe.hincrby(name, field, value)
            pipe.expire(name, self.retention_s)
            pipe.zadd(self._index, {str(minute): minute})
        pipe.zremrangebyscore(self._index, "-inf", f"({int(time.time() - self.retention_s) // 60}")
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            self.store.failed(exc, "adding up usage")
            self._keep(pending)
            return
        self.store.succeeded()

    def _keep(self, pending: dict[int, Counter[str]]) -> None:
        for minute, counts in pending.items():
            self._pending.setdefault(minute, Counter()).update(counts)
        if len(self._pending) > MAX_PENDING_MINUTES:
            for minute in sorted(self._pending)[:len(self._pending) - MAX_PENDING_MINUTES]:
                del self._pending[minute]

    async def summary(self, since: datetime | None, until: datetime | None,
                      fallback: Callable[[datetime | None, datetime | None], Awaitable[Summary]]) -> Summary:
        """``GET /usage`` over every replica; this replica's own log when the store cannot be reached."""
        await self.flush()
        if self.store.available:
            try:
                return await self._from_store(since, until)
            except (RedisError, OSError) as exc:
                self.store.failed(exc, "summing up usage")
        return {**await fallback(since, until), "scope": "this gateway"}

    async def _from_store(self, since: datetime | None, until: datetime | None) -> Summary:
        low = "-inf" if since is None else str(int(since.timestamp() // 60))
        high = "+inf" if until is None else f"({math.ceil(until.timestamp() / 60)}"
        minutes = await self.store.redis.zrangebyscore(self._index, low, high)
        pipe = self.store.redis.pipeline(transaction=False)
        for minute in minutes:
            pipe.hgetall(self.store.name("usage", minute))
        summary: Summary = {"object": "usage.summary", "since": None if since is None else utc_iso(since.timestamp()),
                            "until": None if until is None else utc_iso(until.timestamp()), **empty_row(),
                            "by_key": {}, "by_model": {}}
        for fields in await pipe.execute() if minutes else []:
            add_fields(summary, fields)
        self.store.succeeded()
        summary["by_key"] = dict(sorted(summary["by_key"].items()))
        summary["by_model"] = dict(sorted(summary["by_model"].items()))
        return {**summary, "scope": "all gateways"}
