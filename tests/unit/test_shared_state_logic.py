"""The pure parts of shared state: the key merge, the usage rollup's fields, the store URL setting.

The store itself (Lua scripts, pipelines) is tested against a real redis-server in
tests/inprocess/test_shared_state_store.py.
"""

from __future__ import annotations

import itertools

import pytest
from pydantic import ValidationError

from gateway.keys import StoredKey, merged
from gateway.settings import GatewaySettings
from gateway.shared_usage import add_fields, line_counts, minute_of
from gateway.usage import empty_row


def key(key_id: str, created: str, revoked: str | None = None) -> StoredKey:
    return StoredKey(id=key_id, name=key_id, prefix="msp-abcdef", digest=f"d-{key_id}", created_at=created,
                     rpm=5, revoked_at=revoked)


def test_merging_key_changes_in_any_order_gives_every_replica_the_same_table() -> None:
    changes = [key("a", "1"), key("b", "2"), key("a", "1", revoked="3"), key("c", "4")]
    tables = set()
    for order in itertools.permutations(changes):
        table: tuple[StoredKey, ...] = ()
        for change in order:
            table, _ = merged(table, [change])
        tables.add(tuple(sorted(table, key=lambda k: k.id)))
    assert len(tables) == 1
    (table,) = tables
    assert [(k.id, k.revoked_at) for k in table] == [("a", "3"), ("b", None), ("c", None)]


def test_a_revoked_key_never_comes_back_and_a_repeat_changes_nothing() -> None:
    local = (key("a", "1", revoked="3"), key("b", "2"))
    assert merged(local, [key("a", "1"), key("b", "2")]) == (local, 0)
    table, changed = merged(local, [key("c", "0"), key("b", "2", revoked="5")])
    assert changed == 2
    assert [(k.id, k.revoked_at) for k in table] == [("a", "3"), ("b", "5"), ("c", None)]  # new keys go last


def test_a_usage_line_round_trips_through_the_rollup_fields() -> None:
    entry = {"time": "2026-01-31T12:00:59.999Z", "key_id": "key_1", "model": "llama3:8b", "status": 500,
             "endpoint": "/v1/chat/completions", "prompt_tokens": 3, "completion_tokens": None, "total_tokens": 3}
    assert minute_of(entry["time"]) == minute_of("2026-01-31T12:00:00.000Z") == minute_of("2026-01-31T12:01:00Z") - 1
    fields = line_counts(entry)
    assert fields["requests"] == fields["key:key_1:errors"] == fields["model:llama3:8b:requests"] == 1
    summary = {**empty_row(), "by_key": {}, "by_model": {}}
    add_fields(summary, {name: str(value) for name, value in fields.items()})
    add_fields(summary, {"key:key_1:requests": "2", "unknown": "9", "other:x:requests": "4"})  # foreign fields skipped
    expected = {"requests": 1, "errors": 1, "prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}
    assert summary["by_model"] == {"llama3:8b": expected}
    assert summary["by_key"]["key_1"]["requests"] == 3
    assert {k: summary[k] for k in expected} == expected


def test_the_store_url_setting() -> None:
    assert GatewaySettings(_env_file=None).redis_url is None  # the default: no store, each gateway alone
    assert GatewaySettings(_env_file=None, redis_url="  ").redis_url is None
    assert GatewaySettings(_env_file=None, redis_url="redis://valkey:6379/0").redis_url == "redis://valkey:6379/0"
    with pytest.raises(ValidationError, match="GATEWAY_REDIS_URL"):
        GatewaySettings(_env_file=None, redis_url="valkey:6379")
