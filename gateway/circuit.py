"""Passive circuit breaker per replica: pure transitions plus one small mutable board.

The gateway learns about a replica's trouble from real requests long before the next registry
round does. After ``threshold`` consecutive failures (connect error, timeout, 5xx before the first
byte) the circuit opens and routing skips the replica; after ``cooldown_s`` one request is let
through as a probe (half-open); its success closes the circuit, its failure opens it again.

Transitions are pure functions over a frozen :class:`Circuit` with the clock passed in, so every
edge is unit-tested by calling a function. :class:`CircuitBoard` only keeps the current value per
replica key; the event loop is single-threaded, so no locking is needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Literal

CircuitState = Literal["closed", "open", "half_open"]
# Numeric form for the Prometheus gauge.
STATE_CODES: dict[str, int] = {"closed": 0, "half_open": 1, "open": 2}


@dataclass(frozen=True)
class Circuit:
    state: CircuitState = "closed"
    consecutive_failures: int = 0
    opened_at: float | None = None  # monotonic time the circuit last opened
    probing: bool = False  # half-open: the single probe request is out
    failures_total: int = 0
    opens_total: int = 0


CLOSED = Circuit()


def admits(circuit: Circuit, now: float, cooldown_s: float) -> bool:
    """Whether routing may send a request: closed, or open long enough for the one probe."""
    if circuit.state == "closed":
        return True
    if circuit.state == "open":
        return circuit.opened_at is None or now - circuit.opened_at >= cooldown_s
    return not circuit.probing  # half-open with its probe already out: wait for that answer


def on_dispatch(circuit: Circuit, now: float, cooldown_s: float) -> Circuit:
    """A request is sent: an open circuit past its cooldown turns half-open with this as its probe."""
    if circuit.state == "closed":
        return circuit
    if admits(circuit, now, cooldown_s):
        return replace(circuit, state="half_open", probing=True)
    return circuit


def on_success(circuit: Circuit) -> Circuit:
    """Any success closes the circuit and forgets the failure streak."""
    if circuit.state == "closed" and circuit.consecutive_failures == 0:
        return circuit
    return replace(circuit, state="closed", consecutive_failures=0, opened_at=None, probing=False)


def on_failure(circuit: Circuit, now: float, threshold: int) -> Circuit:
    """A failure before the first byte: count it; open at the threshold, or re-open a failed probe."""
    failures = circuit.consecutive_failures + 1
    total = circuit.failures_total + 1
    if circuit.state == "half_open" or (circuit.state == "closed" and failures >= threshold):
        return Circuit(state="open", consecutive_failures=failures, opened_at=now, probing=False,
                       failures_total=total, opens_total=circuit.opens_total + 1)
    return replace(circuit, consecutive_failures=failures, failures_total=total)


class CircuitBoard:
    """The current :class:`Circuit` of every replica key (a replica's URL) this gateway has used."""

    def __init__(self, threshold: int, cooldown_s: float) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._circuits: dict[str, Circuit] = {}

    def get(self, key: str) -> Circuit:
        return self._circuits.get(key, CLOSED)

    def view(self) -> Mapping[str, Circuit]:
        return MappingProxyType(self._circuits)

    def dispatched(self, key: str, now: float) -> None:
        self._set(key, on_dispatch(self.get(key), now, self.cooldown_s))

    def succeeded(self, key: str) -> None:
        self._set(key, on_success(self.get(key)))

    def failed(self, key: str, now: float) -> Circuit:
        circuit = on_failure(self.get(key), now, self.threshold)
        self._set(key, circuit)
        return circuit

    def released(self, key: str) -> None:
        """A half-open probe ended with neither verdict (the client left): let another probe go."""
        circuit = self.get(key)
        if circuit.probing:
            self._set(key, replace(circuit, probing=False))

    def reset(self, keys: Iterable[str]) -> None:
        """Close the circuits of replicas the registry has just seen recover (active evidence wins)."""
        for key in keys:
            if key in self._circuits:
                self._set(key, on_success(self._circuits[key]))

    def _set(self, key: str, circuit: Circuit) -> None:
        if circuit is CLOSED or (circuit == CLOSED):
            self._circuits.pop(key, None)
        else:
            self._circuits[key] = circuit
