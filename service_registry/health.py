"""Health hysteresis: a pure function from (last record, one probe observation) to the next record.

Kept free of I/O and clocks so every transition is unit-tested directly. The rules:

* A *failure* (connection error, timeout, unexpected status) only takes a healthy service down after
  ``unhealthy_after`` failures in a row, so one dropped probe does not flap routing. A service that
  was not healthy goes (or stays) unhealthy at once: there is nothing to protect.
* A *not-ready* answer (the worker itself says 503 loading / failed) is authoritative and applies at
  once: the worker would refuse requests anyway.
* A *success* makes a service healthy after ``healthy_after`` successes in a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from common.records import GPUReading, GPUStats, ServiceRecord

Outcome = Literal["ok", "not_ready", "failed"]


@dataclass(frozen=True)
class HealthPolicy:
    unhealthy_after: int = 2
    healthy_after: int = 1


@dataclass(frozen=True)
class Observation:
    """What one probe of one service saw. ``url`` guards against applying it to a re-registered id."""

    url: str
    outcome: Outcome
    at: float
    latency_ms: float | None = None
    reason: str | None = None
    loading: bool = False  # for not_ready: still loading (true) or failed (false)
    engine: str | None = None
    max_model_len: int | None = None
    gpu: GPUStats | None = None  # None: not read this round (external, or the read failed)
    gpu_error: str | None = None


def apply_observation(record: ServiceRecord, obs: Observation, policy: HealthPolicy) -> ServiceRecord:
    """The record after ``obs``; the input record is never changed (records are frozen)."""
    update: dict[str, object] = {"probe_latency_ms": obs.latency_ms}
    update.update(_gpu_fields(record, obs))
    if obs.engine is not None:
        update["engine"] = obs.engine
    if obs.max_model_len is not None:
        update["max_model_len"] = obs.max_model_len
    if obs.outcome == "ok":
        successes = record.consecutive_successes + 1
        update.update(consecutive_successes=successes, consecutive_failures=0, last_seen=obs.at)
        if record.status == "healthy" or successes >= policy.healthy_after:
            update.update(status="healthy", reason=None)
        else:
            left = policy.healthy_after - successes
            update["reason"] = f"recovering: {left} more successful probe(s) needed"
        return record.model_copy(update=update)
    failures = record.consecutive_failures + 1
    update.update(consecutive_failures=failures, consecutive_successes=0)
    if obs.outcome == "not_ready":
        update.update(status="loading" if obs.loading else "unhealthy", reason=obs.reason)
    elif record.status != "healthy" or failures >= policy.unhealthy_after:
        update.update(status="unhealthy", reason=obs.reason)
    else:
        update["reason"] = f"probe failed ({failures}/{policy.unhealthy_after}): {obs.reason}"
    return record.model_copy(update=update)


def _gpu_fields(record: ServiceRecord, obs: Observation) -> dict[str, object]:
    """Keep the last good GPU reading when this round could not read one; say why next to it."""
    if obs.gpu is not None:
        gpus = tuple(GPUReading.model_validate(g.model_dump()) for g in obs.gpu.gpus)
        return {"gpu_available": obs.gpu.available, "gpu_reason": obs.gpu.reason, "gpus": gpus}
    if obs.gpu_error is not None:
        return {"gpu_reason": obs.gpu_error}
    return {}
