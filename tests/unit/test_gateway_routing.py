"""Routing is a pure function: these tests build snapshots by hand and call it."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from common.errors import InvalidRequestError, ModelNotFoundError, ServiceUnavailableError
from gateway.routing import CHAT, COMPLETIONS, EMBEDDINGS, choose_replica, pick_least_loaded, resolve_model
from gateway.upstreams import Replica, Snapshot


def rep(url: str, model: str | None = "m", type_: str = "llm", healthy: bool = True) -> Replica:
    return Replica(url=url, model=model, type=type_, healthy=healthy, reason=None if healthy else "down")


SNAP = Snapshot((
    rep("http://a", "chat-a"),
    rep("http://b", "emb", "embedding"),
    rep("http://c", "chat-c"),
    rep("http://d", "chat-a"),
    rep("http://e", "gone", healthy=False),
))


def test_unknown_model_is_404_listing_available_models() -> None:
    with pytest.raises(ModelNotFoundError) as info:
        choose_replica(SNAP, "nope", CHAT, {}, random.Random(0))
    err = info.value
    assert err.status == 404 and err.code == "model_not_found" and err.param == "model"
    assert "'nope'" in err.message
    for model in ("chat-a", "chat-c", "emb"):
        assert model in err.message
    assert "gone" not in err.message  # only models that can answer are offered


def test_known_model_without_healthy_replica_is_503() -> None:
    with pytest.raises(ServiceUnavailableError) as info:
        choose_replica(SNAP, "gone", CHAT, {}, random.Random(0))
    assert info.value.status == 503 and "gone" in info.value.message


def test_unhealthy_replicas_are_skipped() -> None:
    snap = Snapshot((rep("http://x", "m", healthy=False), rep("http://y", "m")))
    rng = random.Random(1)
    assert {choose_replica(snap, "m", CHAT, {}, rng).url for _ in range(50)} == {"http://y"}


def test_exclude_removes_failed_replicas_and_then_503() -> None:
    rng = random.Random(0)
    assert choose_replica(SNAP, "chat-a", CHAT, {}, rng, exclude=["http://a"]).url == "http://d"
    with pytest.raises(ServiceUnavailableError, match="Every replica"):
        choose_replica(SNAP, "chat-a", CHAT, {}, rng, exclude=["http://a", "http://d"])


def test_model_of_wrong_type_for_endpoint_is_400() -> None:
    with pytest.raises(InvalidRequestError) as info:
        choose_replica(SNAP, "emb", CHAT, {}, random.Random(0))
    assert info.value.status == 400 and info.value.code == "model_not_supported"
    with pytest.raises(InvalidRequestError):
        choose_replica(SNAP, "chat-a", EMBEDDINGS, {}, random.Random(0))


def test_default_model_follows_endpoint_type_in_configured_order() -> None:
    assert resolve_model(SNAP, None, CHAT, None) == "chat-a"
    assert resolve_model(SNAP, None, COMPLETIONS, None) == "chat-a"
    assert resolve_model(SNAP, None, EMBEDDINGS, None) == "emb"
    assert resolve_model(SNAP, "", CHAT, None) == "chat-a"


def test_configured_default_wins_and_explicit_model_wins_over_default() -> None:
    assert resolve_model(SNAP, None, CHAT, "chat-c") == "chat-c"
    assert resolve_model(SNAP, "chat-a", CHAT, "chat-c") == "chat-a"


def test_default_skips_unhealthy_and_falls_back_to_capable_type() -> None:
    snap = Snapshot((rep("http://a", "old", healthy=False), rep("http://b", "vision", "multimodal")))
    assert resolve_model(snap, None, CHAT, None) == "vision"
    with pytest.raises(ServiceUnavailableError):
        resolve_model(snap, None, EMBEDDINGS, None)


@pytest.mark.parametrize("bad", [1, 1.5, ["m"], {"id": "m"}, True])
def test_model_that_is_not_a_string_is_400_naming_model(bad: object) -> None:
    with pytest.raises(InvalidRequestError) as info:
        resolve_model(SNAP, bad, CHAT, None)
    assert info.value.param == "model" and info.value.status == 400


def test_two_replicas_p2c_always_picks_the_less_loaded() -> None:
    rng = random.Random(7)
    picks = {choose_replica(SNAP, "chat-a", CHAT, {"http://a": 3, "http://d": 1}, rng).url for _ in range(100)}
    assert picks == {"http://d"}


def test_p2c_never_picks_the_most_loaded_of_three() -> None:
    cands = [rep("http://1"), rep("http://2"), rep("http://3")]
    load = {"http://1": 0, "http://2": 5, "http://3": 9}
    rng = random.Random(3)
    picks = Counter(pick_least_loaded(cands, load, rng).url for _ in range(300))
    assert "http://3" not in picks
    assert picks["http://1"] > picks["http://2"] > 0  # 1 wins every pair it is in


def test_ties_spread_the_load() -> None:
    cands = [rep("http://1"), rep("http://2"), rep("http://3")]
    rng = random.Random(11)
    picks = Counter(pick_least_loaded(cands, {}, rng).url for _ in range(300))
    assert set(picks) == {"http://1", "http://2", "http://3"}
    assert min(picks.values()) > 50


def test_seeded_rng_makes_choices_reproducible() -> None:
    cands = [rep(f"http://{i}") for i in range(5)]
    def run(seed: int) -> list[str]:
        rng = random.Random(seed)
        return [pick_least_loaded(cands, {}, rng).url for _ in range(20)]

    assert run(42) == run(42)
    assert len(set(run(42))) > 1


def test_no_models_at_all_says_so() -> None:
    snap = Snapshot((rep("http://y", "m", healthy=False),))
    with pytest.raises(ModelNotFoundError, match="none are available"):
        choose_replica(snap, "other", CHAT, {}, random.Random(0))


def test_unknown_model_while_a_worker_never_answered_is_503_not_404() -> None:
    snap = Snapshot((Replica(url="http://z"), rep("http://y", "m")))
    with pytest.raises(ServiceUnavailableError, match="not available right now"):
        choose_replica(snap, "other", CHAT, {}, random.Random(0))
    assert choose_replica(snap, "m", CHAT, {}, random.Random(0)).url == "http://y"
