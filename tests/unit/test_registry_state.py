"""The registry's snapshot: copy-on-write registration, heartbeats, expiry, round merging."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from common.errors import NotFoundError
from common.records import GPUInfo, GPUStats, ServiceSnapshot
from service_registry.errors import ConflictError
from service_registry.health import HealthPolicy, Observation
from service_registry.registry import Registry
from service_registry.schemas import Registration
from service_registry.settings import RegistrySettings, StaticUpstream

SETTINGS = RegistrySettings(_env_file=None, heartbeat_ttl_s=15.0, heartbeat_ttl_factor=3.0)


def make(statics: list[StaticUpstream] | None = None) -> Registry:
    return Registry(statics or [], HealthPolicy(), ttl_for=SETTINGS.ttl_for, now=100.0)


def reg(**kw) -> Registration:
    base = {"url": "http://127.0.0.1:8001", "models": ["m"], "type": "llm"}
    return Registration(**{**base, **kw})


def test_register_generates_id_and_reuses_it_for_the_same_url() -> None:
    registry = make()
    first, created = registry.register(reg(), now=100.0)
    assert created and first.id.startswith("worker-") and first.status == "unknown"
    again, created_again = registry.register(reg(), now=101.0)
    assert not created_again and again.id == first.id and again.last_heartbeat == 101.0
    assert len(registry.snapshot.data) == 1


def test_reregistration_keeps_health_unless_the_url_moves() -> None:
    registry = make()
    registry.register(reg(id="w"), now=100.0)
    registry.apply_round({"w": Observation(url="http://127.0.0.1:8001", outcome="ok", at=100.0)}, now=100.0)
    same, _ = registry.register(reg(id="w", models=["m", "n"]), now=101.0)
    assert same.status == "healthy" and same.models == ("m", "n")
    moved, _ = registry.register(reg(id="w", url="http://127.0.0.1:8002"), now=102.0)
    assert moved.status == "unknown" and moved.api_base == "http://127.0.0.1:8002/v1"


def test_ttl_follows_the_heartbeat_interval() -> None:
    registry = make()
    with_interval, _ = registry.register(reg(id="a", heartbeat_interval=2.0), now=100.0)
    without, _ = registry.register(reg(id="b", url="http://127.0.0.1:8002"), now=100.0)
    assert with_interval.expires_after_s == 6.0 and without.expires_after_s == 15.0


def test_expiry_drops_only_silent_workers() -> None:
    statics = [StaticUpstream(id="ext", base_url="http://10.0.0.1:8000", models=["x"])]
    registry = make(statics)
    registry.register(reg(id="quiet", heartbeat_interval=1.0), now=100.0)
    registry.register(reg(id="chatty", url="http://127.0.0.1:8002", heartbeat_interval=1.0), now=100.0)
    registry.heartbeat("chatty", now=103.5)
    result = registry.apply_round({}, now=104.0)
    assert result.expired == ("quiet",)
    assert [s.id for s in result.snapshot.data] == ["ext", "chatty"]
    assert result.snapshot.round == 1 and result.snapshot.taken_at == 104.0


def test_heartbeat_and_deregister_unknown_or_static() -> None:
    registry = make([StaticUpstream(id="ext", base_url="http://10.0.0.1:8000", models=["x"])])
    with pytest.raises(NotFoundError):
        registry.heartbeat("nope", now=1.0)
    with pytest.raises(NotFoundError):
        registry.deregister("nope")
    with pytest.raises(ConflictError):
        registry.deregister("ext")
    with pytest.raises(ConflictError):
        registry.register(reg(id="ext"), now=1.0)


def test_round_ignores_observations_for_a_moved_or_removed_service() -> None:
    registry = make()
    registry.register(reg(id="w"), now=100.0)
    stale = Observation(url="http://127.0.0.1:9999", outcome="ok", at=100.0)
    gone = Observation(url="http://127.0.0.1:8001", outcome="ok", at=100.0)
    snapshot = registry.apply_round({"w": stale, "deleted": gone}, now=100.0).snapshot
    assert snapshot.get("w").status == "unknown" and snapshot.get("deleted") is None


def test_registration_during_a_round_is_kept() -> None:
    registry = make()
    registry.register(reg(id="old"), now=100.0)
    probed = registry.snapshot  # the round starts from this snapshot ...
    registry.register(reg(id="new", url="http://127.0.0.1:8002"), now=100.5)  # ... a worker registers meanwhile
    obs = {r.id: Observation(url=r.url, outcome="ok", at=101.0) for r in probed.data}
    snapshot = registry.apply_round(obs, now=101.0).snapshot
    assert {s.id: s.status for s in snapshot.data} == {"old": "healthy", "new": "unknown"}


def test_snapshots_are_immutable_and_replaced_not_edited() -> None:
    registry = make()
    registry.register(reg(id="w"), now=100.0)
    before = registry.snapshot
    gpu = GPUStats(available=True, gpus=[GPUInfo(index=0, name="A")])
    registry.apply_round({"w": Observation(url="http://127.0.0.1:8001", outcome="ok", at=1.0, gpu=gpu)}, now=1.0)
    after = registry.snapshot
    assert after is not before and before.get("w").status == "unknown" and after.get("w").status == "healthy"
    record = after.get("w")
    with pytest.raises(ValidationError):
        record.status = "unhealthy"
    with pytest.raises(ValidationError):
        after.round = 7
    with pytest.raises(ValidationError):
        record.gpus[0].name = "B"
    with pytest.raises(TypeError):
        record.upstream_models["m"] = "other"  # type: ignore[index]
    assert isinstance(after.data, tuple) and isinstance(record.models, tuple)


def test_snapshot_round_trips_through_json() -> None:
    registry = make([StaticUpstream(id="ext", base_url="http://10.0.0.1:8000/v1", models={"pub": "up"})])
    registry.register(reg(id="w", gpu_indices=[1, 0, 1]), now=100.0)
    wire = registry.snapshot.model_dump_json()
    parsed = ServiceSnapshot.model_validate_json(wire)
    assert parsed == registry.snapshot
    assert parsed.get("ext").upstream_model("pub") == "up" and parsed.get("w").gpu_indices == (0, 1)
