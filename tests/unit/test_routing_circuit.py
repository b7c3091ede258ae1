"""The passive circuit breaker: pure transitions with the clock passed in, and the per-replica board."""

from __future__ import annotations

import random

import pytest

from common.errors import ServiceUnavailableError
from gateway.circuit import CLOSED, CircuitBoard, admits, on_dispatch, on_failure, on_success
from gateway.routing import CHAT, Rules, choose_replica
from gateway.upstreams import Replica, Snapshot

COOLDOWN = 5.0


def test_closed_to_open_after_k_consecutive_failures() -> None:
    c = CLOSED
    for _ in range(2):
        c = on_failure(c, now=10.0, threshold=3)
        assert c.state == "closed" and admits(c, 10.0, COOLDOWN)
    c = on_failure(c, now=11.0, threshold=3)
    assert c.state == "open" and c.opened_at == 11.0 and c.opens_total == 1
    assert not admits(c, 11.0 + COOLDOWN - 0.1, COOLDOWN)


def test_success_in_between_resets_the_streak() -> None:
    c = on_failure(on_failure(CLOSED, 0, 3), 0, 3)
    c = on_success(c)
    assert c.state == "closed" and c.consecutive_failures == 0 and c.failures_total == 2
    assert on_failure(c, 0, 3).state == "closed"


def test_open_turns_half_open_with_a_single_probe_after_the_cooldown() -> None:
    opened = on_failure(CLOSED, now=0.0, threshold=1)
    assert on_dispatch(opened, 1.0, COOLDOWN) == opened  # still cooling down: nothing changes
    probe = on_dispatch(opened, COOLDOWN, COOLDOWN)
    assert probe.state == "half_open" and probe.probing
    assert not admits(probe, 100.0, COOLDOWN)  # one probe at a time


def test_half_open_probe_success_closes_and_failure_reopens() -> None:
    probe = on_dispatch(on_failure(CLOSED, 0.0, 1), COOLDOWN, COOLDOWN)
    assert on_success(probe).state == "closed"
    again = on_failure(probe, now=7.0, threshold=3)  # a failed probe re-opens at once, whatever K is
    assert again.state == "open" and again.opened_at == 7.0 and again.opens_total == 2
    assert not admits(again, 7.0 + COOLDOWN / 2, COOLDOWN) and admits(again, 7.0 + COOLDOWN, COOLDOWN)


def test_board_tracks_keys_and_releases_an_abandoned_probe() -> None:
    board = CircuitBoard(threshold=2, cooldown_s=1.0)
    board.failed("a", 0.0)
    board.failed("a", 0.0)
    assert board.get("a").state == "open" and board.get("b") is CLOSED
    board.dispatched("a", 1.0)
    assert board.get("a").probing
    board.released("a")  # the client left before a verdict: another probe may go
    assert board.get("a").state == "half_open" and not board.get("a").probing
    board.reset(["a"])
    assert board.get("a").state == "closed"


def test_routing_skips_open_circuits_and_says_so_when_none_is_left() -> None:
    snap = Snapshot((Replica("http://a", "m", "llm", healthy=True), Replica("http://b", "m", "llm", healthy=True)))
    board = CircuitBoard(threshold=1, cooldown_s=COOLDOWN)
    board.failed("http://a", now=0.0)
    rules = Rules(cooldown_s=COOLDOWN)
    rng = random.Random(0)
    picks = {choose_replica(snap, "m", CHAT, {}, rng, circuits=board.view(), now=1.0, rules=rules).url
             for _ in range(30)}
    assert picks == {"http://b"}
    board.failed("http://b", now=0.0)
    with pytest.raises(ServiceUnavailableError, match="circuit open") as info:
        choose_replica(snap, "m", CHAT, {}, rng, circuits=board.view(), now=1.0, rules=rules)
    assert info.value.headers["Retry-After"] == "1"
    # After the cooldown the open circuit admits again (the half-open probe).
    assert choose_replica(snap, "m", CHAT, {}, rng, circuits=board.view(), now=COOLDOWN, rules=rules)
