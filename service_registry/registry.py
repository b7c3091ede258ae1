"""The registry's one piece of state: the current :class:`ServiceSnapshot`, replaced, never edited.

Every change (a registration, a heartbeat, a deregistration, the results of a poll round) builds a new
frozen snapshot from the current one and assigns it in a single statement. All of this runs on the
event loop with no ``await`` between reading the current snapshot and assigning the next, so changes
never interleave and readers only ever see whole snapshots. A poll round probes the services of the
snapshot it started from but merges its observations into the snapshot current when it ends, so a
registration that arrived mid-round is kept.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from common.records import ServiceRecord, ServiceSnapshot
from service_registry.errors import ConflictError, ServiceNotFoundError
from service_registry.health import HealthPolicy, Observation, apply_observation
from service_registry.schemas import Registration
from service_registry.settings import StaticUpstream


@dataclass(frozen=True)
class RoundResult:
    snapshot: ServiceSnapshot
    expired: tuple[str, ...]


class Registry:
    def __init__(
        self,
        statics: Sequence[StaticUpstream],
        policy: HealthPolicy,
        *,
        ttl_for: Callable[[float | None], float],
        default_priority: int = 0,
        now: float = 0.0,
    ) -> None:
        self._policy = policy
        self._ttl_for = ttl_for
        self._default_priority = default_priority
        self._static_ids = frozenset(s.id for s in statics)
        records = tuple(s.record().model_copy(update={"registered_at": now}) for s in statics)
        self.snapshot = ServiceSnapshot(data=records, taken_at=now)

    def is_static(self, service_id: str) -> bool:
        return service_id in self._static_ids

    def register(self, reg: Registration, now: float) -> tuple[ServiceRecord, bool]:
        """Add a worker, or refresh it (a heartbeat) when its id, or with no id its URL, is known."""
        current = self.snapshot
        service_id = reg.id or self._id_for_url(current, reg.url) or f"worker-{uuid.uuid4().hex[:12]}"
        if self.is_static(service_id):
            raise ConflictError(f"'{service_id}' is a configured static upstream; pick another id.", param="id")
        old = current.get(service_id)
        fields = {
            "url": reg.url, "api_base": f"{reg.url}/v1", "models": tuple(reg.models),
            "upstream_models": {m: m for m in reg.models}, "type": reg.type,
            "gpu_indices": tuple(reg.gpu_indices), "capacity": reg.capacity,
            "priority": self._default_priority if reg.priority is None else reg.priority,
            "last_heartbeat": now, "heartbeat_interval_s": reg.heartbeat_interval,
            "expires_after_s": self._ttl_for(reg.heartbeat_interval),
        }
        if old is None or old.url != reg.url:
            # New, or moved to another address: what was learned about the old address no longer holds.
            record = ServiceRecord(id=service_id, kind="worker", registered_at=now, **fields)
        else:
            record = ServiceRecord.model_validate({**old.model_dump(), **fields})
        self._swap(current, _replaced(current.data, record))
        return record, old is None

    def heartbeat(self, service_id: str, now: float) -> ServiceRecord:
        current = self.snapshot
        old = self._worker(current, service_id)
        record = old.model_copy(update={"last_heartbeat": now})
        self._swap(current, _replaced(current.data, record))
        return record

    def deregister(self, service_id: str) -> ServiceRecord:
        current = self.snapshot
        old = self._worker(current, service_id)
        self._swap(current, tuple(s for s in current.data if s.id != service_id))
        return old

    def apply_round(self, observations: Mapping[str, Observation], now: float) -> RoundResult:
        """Merge one round's observations, drop workers whose heartbeat is too old, swap once."""
        current = self.snapshot
        kept: list[ServiceRecord] = []
        expired: list[str] = []
        for record in current.data:
            if _expired(record, now):
                expired.append(record.id)
                continue
            obs = observations.get(record.id)
            if obs is not None and obs.url == record.url:
                record = apply_observation(record, obs, self._policy)
            kept.append(record)
        self.snapshot = ServiceSnapshot(data=tuple(kept), taken_at=now, round=current.round + 1)
        return RoundResult(self.snapshot, tuple(expired))

    def _worker(self, snapshot: ServiceSnapshot, service_id: str) -> ServiceRecord:
        if self.is_static(service_id):
            raise ConflictError(
                f"'{service_id}' is a configured static upstream; change the registry's configuration "
                "to remove it.", param="id")
        record = snapshot.get(service_id)
        if record is None:
            raise ServiceNotFoundError(f"No registered service with id '{service_id}'.", param="id")
        return record

    def _swap(self, current: ServiceSnapshot, data: tuple[ServiceRecord, ...]) -> None:
        self.snapshot = current.model_copy(update={"data": data})

    @staticmethod
    def _id_for_url(snapshot: ServiceSnapshot, url: str) -> str | None:
        return next((s.id for s in snapshot.data if s.kind == "worker" and s.url == url), None)


def _replaced(data: tuple[ServiceRecord, ...], record: ServiceRecord) -> tuple[ServiceRecord, ...]:
    """``data`` with ``record`` in place of the one with its id, or appended when new."""
    if any(s.id == record.id for s in data):
        return tuple(record if s.id == record.id else s for s in data)
    return (*data, record)


def _expired(record: ServiceRecord, now: float) -> bool:
    if record.kind != "worker" or record.last_heartbeat is None or record.expires_after_s is None:
        return False
    return now - record.last_heartbeat > record.expires_after_s
