"""Hysteresis of the registry's health states: one pure function, every transition."""

from __future__ import annotations

import pytest

from common.records import GPUInfo, GPUStats, ServiceRecord
from service_registry.health import HealthPolicy, Observation, apply_observation

URL = "http://127.0.0.1:9"


def record(**kw) -> ServiceRecord:
    base = {"id": "w1", "kind": "worker", "url": URL, "api_base": f"{URL}/v1", "models": ("m",), "type": "llm"}
    return ServiceRecord(**{**base, **kw})


def ok(at: float = 1.0, **kw) -> Observation:
    return Observation(url=URL, outcome="ok", at=at, latency_ms=1.0, **kw)


def fail(reason: str = "unreachable: ConnectError") -> Observation:
    return Observation(url=URL, outcome="failed", at=1.0, reason=reason)


def run(rec: ServiceRecord, observations: list[Observation], policy: HealthPolicy) -> list[ServiceRecord]:
    seen = []
    for obs in observations:
        rec = apply_observation(rec, obs, policy)
        seen.append(rec)
    return seen


def test_healthy_needs_n_consecutive_failures_to_go_down() -> None:
    policy = HealthPolicy(unhealthy_after=3, healthy_after=1)
    states = run(record(), [ok(), fail(), fail(), fail()], policy)
    assert [s.status for s in states] == ["healthy", "healthy", "healthy", "unhealthy"]
    assert states[1].reason and "1/3" in states[1].reason
    assert states[3].reason == "unreachable: ConnectError"
    assert states[3].consecutive_failures == 3 and states[3].consecutive_successes == 0


def test_a_success_resets_the_failure_count() -> None:
    policy = HealthPolicy(unhealthy_after=2, healthy_after=1)
    states = run(record(), [ok(), fail(), ok(), fail()], policy)
    assert [s.status for s in states] == ["healthy"] * 4
    assert states[-1].consecutive_failures == 1


def test_unhealthy_needs_m_successes_to_come_back() -> None:
    policy = HealthPolicy(unhealthy_after=1, healthy_after=3)
    states = run(record(status="healthy"), [fail(), ok(), ok(), ok()], policy)
    assert [s.status for s in states] == ["unhealthy", "unhealthy", "unhealthy", "healthy"]
    assert "2 more" in (states[1].reason or "")
    assert states[-1].reason is None and states[-1].last_seen == 1.0


def test_never_healthy_service_fails_at_once() -> None:
    policy = HealthPolicy(unhealthy_after=5)
    (state,) = run(record(), [fail("probe timed out")], policy)
    assert state.status == "unhealthy" and state.reason == "probe timed out"


@pytest.mark.parametrize(("loading", "status"), [(True, "loading"), (False, "unhealthy")])
def test_not_ready_answer_applies_at_once(loading: bool, status: str) -> None:
    policy = HealthPolicy(unhealthy_after=5)
    obs = Observation(url=URL, outcome="not_ready", at=1.0, reason="loading: still loading", loading=loading)
    (state,) = run(record(status="healthy"), [obs], policy)
    assert state.status == status and state.reason == "loading: still loading"


def test_loading_worker_turns_healthy_when_ready() -> None:
    policy = HealthPolicy()
    loading = Observation(url=URL, outcome="not_ready", at=1.0, reason="loading", loading=True)
    states = run(record(), [loading, ok(engine="fake", max_model_len=2048)], policy)
    assert [s.status for s in states] == ["loading", "healthy"]
    assert states[-1].engine == "fake" and states[-1].max_model_len == 2048


def test_gpu_reading_is_kept_when_a_later_read_fails() -> None:
    stats = GPUStats(available=True, gpus=[GPUInfo(index=0, name="H100", memory_used_mb=1.0)])
    first = apply_observation(record(), ok(gpu=stats), HealthPolicy())
    assert first.gpu_available is True and first.gpus[0].name == "H100"
    second = apply_observation(first, ok(gpu_error="gpu-stats answered HTTP 500"), HealthPolicy())
    assert second.gpus == first.gpus and second.gpu_reason == "gpu-stats answered HTTP 500"


def test_input_record_is_never_changed() -> None:
    before = record()
    after = apply_observation(before, fail(), HealthPolicy())
    assert before.status == "unknown" and before.consecutive_failures == 0
    assert after is not before
