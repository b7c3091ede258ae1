"""Usage over time, from the usage log: per time bucket, by model and by key, the requests, errors,
tokens and the p50/p95 of latency and time to first token. The console's usage charts draw it.

It reads the same lines as ``GET /usage`` (:func:`gateway.usage.read_lines`), so the charts and the
totals can never disagree. Percentiles are nearest-rank over the bucket's own lines: exact, and cheap
at the sizes a window of the log holds.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.usage import is_request_line, read_lines, utc_iso

MAX_BUCKETS = 500


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of ``values`` (None for none)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass
class Cell:
    """One group's lines within one bucket."""

    requests: int = 0
    errors: int = 0
    tokens: int = 0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)

    def add(self, entry: dict[str, Any]) -> None:
        self.requests += 1
        status = entry.get("status")
        if isinstance(status, int) and status >= 400:
            self.errors += 1
        tokens = entry.get("total_tokens")
        if isinstance(tokens, int):
            self.tokens += tokens
        for name, into in (("latency_ms", self.latencies), ("ttft_ms", self.ttfts)):
            value = entry.get(name)
            if isinstance(value, int | float):
                into.append(float(value))

    def view(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "total_tokens": self.tokens,
                "latency_p50_ms": percentile(self.latencies, 0.5), "latency_p95_ms": percentile(self.latencies, 0.95),
                "ttft_p50_ms": percentile(self.ttfts, 0.5), "ttft_p95_ms": percentile(self.ttfts, 0.95)}


def bucket_size(since: datetime, until: datetime, bucket_s: int) -> int:
    """``bucket_s``, widened so the window holds at most :data:`MAX_BUCKETS` buckets."""
    span = max(1.0, (until - since).total_seconds())
    return max(bucket_s, math.ceil(span / MAX_BUCKETS))


def series(paths: list[Path], since: datetime, until: datetime, bucket_s: int,
           key_id: str | None = None) -> dict[str, Any]:
    """Request lines in ``[since, until)`` (only ``key_id``'s when given), bucketed by ``bucket_s``
    seconds: ``buckets`` are the start times; ``by_model`` and ``by_key`` hold one row per bucket."""
    step = bucket_size(since, until, bucket_s)
    start = math.floor(since.timestamp() / step) * step
    count = max(1, math.ceil((until.timestamp() - start) / step))
    low, high = utc_iso(since.timestamp()), utc_iso(until.timestamp())
    groups: dict[str, dict[str, dict[int, Cell]]] = {"by_model": defaultdict(dict), "by_key": defaultdict(dict)}
    for entry in read_lines(paths):
        moment = entry.get("time")
        if not isinstance(moment, str) or not is_request_line(entry) or not low <= moment < high:
            continue
        if key_id is not None and entry.get("key_id") != key_id:
            continue
        try:
            index = int((datetime.fromisoformat(moment).timestamp() - start) // step)
        except ValueError:
            continue
        for group, name in (("by_model", entry.get("model")), ("by_key", entry.get("key_id"))):
            groups[group][str(name or "-")].setdefault(index, Cell()).add(entry)
    empty = Cell().view()
    return {
        "object": "usage.series", "since": low, "until": high, "bucket_s": step,
        "buckets": [utc_iso(start + i * step) for i in range(count)],
        **{group: {name: [cells[i].view() if i in cells else empty for i in range(count)]
                   for name, cells in sorted(rows.items())} for group, rows in groups.items()},
    }


def window(since: datetime | None, until: datetime | None, default_s: float) -> tuple[datetime, datetime]:
    """The window asked for, defaulting to the last ``default_s`` seconds up to now."""
    high = until or datetime.now(UTC)
    low = since or datetime.fromtimestamp(high.timestamp() - default_s, UTC)
    return low, high
