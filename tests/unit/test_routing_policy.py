"""Routing over several replicas: policy, priority tiers (externals), GPU health, fallbacks, retries."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from common.errors import ServiceUnavailableError
from common.records import GPUReading, ServiceRecord, ServiceSnapshot
from gateway.follower import merge_registry_view, replicas_of
from gateway.routing import (
    CHAT,
    Rules,
    backoff_s,
    choose_replica,
    fallback_chain,
    gpu_problem,
    may_retry,
    preferred_tier,
)
from gateway.upstreams import Replica, Snapshot


def rep(url: str, model: str = "m", **kw) -> Replica:
    return Replica(url=url, model=model, type="llm", healthy=kw.pop("healthy", True), reason=None, **kw)


def gpu(index: int = 0, used: float = 1000, total: float = 80000, error: str | None = None) -> GPUReading:
    return GPUReading(index=index, name="H100", memory_used_mb=used, memory_total_mb=total, error=error)


def test_least_outstanding_prefers_the_less_loaded_of_two() -> None:
    snap = Snapshot((rep("http://a"), rep("http://b")))
    rng = random.Random(0)
    picks = Counter(choose_replica(snap, "m", CHAT, {"http://a": 5}, rng).url for _ in range(50))
    assert picks == {"http://b": 50}


def test_round_robin_cycles_through_replicas_in_order() -> None:
    snap = Snapshot((rep("http://a"), rep("http://b"), rep("http://c")))
    rules = Rules(policy="round_robin")
    picks = [choose_replica(snap, "m", CHAT, {"http://a": 9}, random.Random(0), rules=rules, turn=t).url
             for t in range(6)]
    assert picks == ["http://a", "http://b", "http://c"] * 2  # round-robin ignores load by design


def test_equal_replicas_share_load_evenly_under_power_of_two_choices() -> None:
    snap = Snapshot((rep("http://a"), rep("http://b")))
    rng, in_flight = random.Random(3), Counter[str]()
    for _ in range(200):  # every request stays open: the counts drive the choice
        in_flight[choose_replica(snap, "m", CHAT, in_flight, rng).url] += 1
    assert abs(in_flight["http://a"] - in_flight["http://b"]) <= 1


def test_externals_only_take_traffic_when_local_replicas_are_saturated_or_unusable() -> None:
    local = rep("http://local", capacity=2)
    external = rep("http://ext/v1", priority=100, kind="external")
    snap = Snapshot((external, local))
    rng = random.Random(0)
    assert choose_replica(snap, "m", CHAT, {"http://local": 1}, rng).url == "http://local"
    assert choose_replica(snap, "m", CHAT, {"http://local": 2}, rng).url == "http://ext/v1"  # saturated
    down = Snapshot((external, rep("http://local", healthy=False)))
    assert choose_replica(down, "m", CHAT, {}, rng).url == "http://ext/v1"
    # Everything saturated: stay with the preferred tier (its queue answers 429 if truly full).
    full = preferred_tier([local, rep("http://ext/v1", priority=100, capacity=1)], {"http://local": 2,
                                                                                    "http://ext/v1": 1})
    assert [r.url for r in full] == ["http://local"]


def test_replicas_with_bad_gpu_reports_are_skipped() -> None:
    full = rep("http://full", gpus=(gpu(used=79500),))
    broken = rep("http://broken", gpus=(gpu(error="NVML_ERROR_GPU_IS_LOST"),))
    fine = rep("http://fine", gpus=(gpu(),))
    assert "memory exhausted" in gpu_problem(full, 0.98) and "NVML" in gpu_problem(broken, 0.98)
    assert gpu_problem(rep("http://cpu"), 0.98) is None
    snap = Snapshot((full, broken, fine))
    limited = Rules(gpu_memory_limit=0.98)
    picks = {choose_replica(snap, "m", CHAT, {}, random.Random(i), rules=limited).url for i in range(20)}
    assert picks == {"http://fine"}
    with pytest.raises(ServiceUnavailableError, match="memory exhausted"):
        choose_replica(Snapshot((full,)), "m", CHAT, {}, random.Random(0), rules=limited)


def test_gpu_memory_counts_only_when_a_limit_is_set() -> None:
    """Off by default: NVML shows reserved memory, which caching allocators keep while idle."""
    full = rep("http://full", gpus=(gpu(used=79500),))
    broken = rep("http://broken", gpus=(gpu(error="NVML_ERROR_GPU_IS_LOST"),))
    assert gpu_problem(full, None) is None and "NVML" in gpu_problem(broken, None)
    snap = Snapshot((full, broken))
    assert {choose_replica(snap, "m", CHAT, {}, random.Random(i)).url for i in range(20)} == {"http://full"}


def test_only_the_replicas_own_gpus_count_when_reported() -> None:
    other_busy = rep("http://w", gpu_indices=(1,), gpus=(gpu(0, used=80000), gpu(1)))
    assert gpu_problem(other_busy, 0.98) is None


def test_fallback_chain_follows_the_map_without_cycles() -> None:
    assert fallback_chain("big", {"big": "mid", "mid": "small"}) == ["big", "mid", "small"]
    assert fallback_chain("a", {"a": "b", "b": "a"}) == ["a", "b"]
    assert fallback_chain("x", {}) == ["x"]


def test_retry_budget_is_bounded_and_only_for_retryable_failures() -> None:
    assert may_retry("unreachable: ConnectError", attempts_made=1, retries=2)
    assert may_retry("upstream_5xx: HTTP 502", attempts_made=2, retries=2)
    assert not may_retry("timeout: no answer in time", attempts_made=3, retries=2)
    assert not may_retry("timeout: no answer in time", attempts_made=1, retries=0)
    assert not may_retry("client_error: HTTP 400", attempts_made=1, retries=2)


def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(0)
    assert backoff_s(0, 0.05, 0.5, rng) == 0.0
    first = [backoff_s(1, 0.05, 0.5, rng) for _ in range(20)]
    assert all(0.025 <= d <= 0.05 for d in first) and len(set(first)) > 1
    assert all(0.25 <= backoff_s(10, 0.05, 0.5, rng) <= 0.5 for _ in range(20))


def record(id_: str, status: str = "healthy", **kw) -> ServiceRecord:
    base = {"kind": "worker", "url": f"http://{id_}", "api_base": f"http://{id_}/v1", "models": ("m",),
            "type": "llm", "status": status, "reason": None if status == "healthy" else "not probed yet"}
    return ServiceRecord(id=id_, **{**base, **kw})


def test_registry_records_map_to_replicas_with_upstream_names() -> None:
    ext = record("ext", kind="external", url="http://e/v1", api_base="http://e/v1", models=("pub-a", "pub-b"),
                 upstream_models={"pub-a": "up-a", "pub-b": "pub-b"}, priority=100, has_api_key=True)
    replicas = replicas_of(ext)
    assert [(r.model, r.name_upstream(r.model), r.base) for r in replicas] == [
        ("pub-a", "up-a", "http://e/v1"), ("pub-b", "pub-b", "http://e/v1")]
    worker = replicas_of(record("w", capacity=32, gpu_indices=(0,)))[0]
    assert worker.base == "http://w/v1" and worker.name_upstream("m") == "m" and worker.capacity == 32


def test_a_restarted_registry_does_not_empty_the_routing_table_while_settling() -> None:
    before = tuple(replicas_of(record("a")) + replicas_of(record("b")))
    relearned = replicas_of(record("a", status="unknown"))  # b has not re-registered yet
    kept = merge_registry_view(before, relearned, settling=True)
    assert [(r.url, r.healthy) for r in kept] == [("http://a", True), ("http://b", True)]
    settled = merge_registry_view(before, relearned, settling=False)
    assert [(r.url, r.healthy) for r in settled] == [("http://a", False)]


def test_snapshot_service_records_parse_from_registry_json() -> None:
    snap = ServiceSnapshot(data=(record("a"),), round=3)
    again = ServiceSnapshot.model_validate_json(snap.model_dump_json())
    assert replicas_of(again.data[0])[0].healthy
