"""The console's figures as pure functions: nearest-rank percentiles, a replica's last-minute latency
window (old answers leave it), and usage buckets widened so a long window stays drawable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.metrics import RecentLatency
from gateway.usage_series import MAX_BUCKETS, bucket_size, percentile


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([5.0], 0.95) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.95), percentile(values, 1.0)) == (50.0, 95.0, 100.0)
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0  # order of arrival does not matter


def test_recent_latency_keeps_only_the_window() -> None:
    recent = RecentLatency(window_s=60)
    for second, taken in ((0, 0.010), (30, 0.020), (59, 0.900)):
        recent.record("http://a", taken, now=1000.0 + second)
    assert recent.view("http://a", now=1059.0) == {"p50_ms": 20.0, "p95_ms": 900.0, "requests_per_s": 0.05}
    # 61 s later the first two have left the window; 200 s later all have.
    assert recent.view("http://a", now=1091.0) == {"p50_ms": 900.0, "p95_ms": 900.0, "requests_per_s": 0.017}
    assert recent.view("http://a", now=1200.0) == {"p50_ms": None, "p95_ms": None, "requests_per_s": 0.0}
    assert recent.view("http://never-used") == {"p50_ms": None, "p95_ms": None, "requests_per_s": 0.0}


def test_bucket_size_widens_for_long_windows() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert bucket_size(start, start + timedelta(hours=1), 60) == 60
    week = bucket_size(start, start + timedelta(days=7), 60)
    assert week >= 60 and 7 * 86400 / week <= MAX_BUCKETS
