"""User keys kept in step across gateway replicas through the shared state store.

Each replica keeps its own key file and in-memory table (a lookup stays a dict hit, and a replica
whose store is down still knows every key it has seen). The store holds the union: one hash of key
id -> the key's file row (digest, never the secret), plus a version number bumped whenever the hash
changes. The union only grows: a key is added once, and a revocation overwrites a live row, never the
other way round. Such a merge needs no ordering or locking between replicas, survives a replica that
missed changes while the store was down, and rebuilds an emptied store from the replicas' own files.

Why not pub/sub: a message published while a replica was reconnecting is lost, and a lost revocation
is a security hole. A version check every ``GATEWAY_REDIS_SYNC_INTERVAL_S`` (0.2 s: one small GET)
bounds the delay without that hole; a replica pushes its own changes the moment they are made.
"""

from __future__ import annotations

import asyncio
import json
import logging

from redis.exceptions import RedisError

from gateway.keys import KeyStore, StoredKey
from gateway.shared_state import SharedStore, cancel, run_every

log = logging.getLogger(__name__)

# KEYS: the keys hash, the version. ARGV: id, row JSON, id, row JSON, ...
# Adds rows the hash lacks and revocations it lacks; bumps the version when anything changed (or when
# there is none yet). Returns the version.
MERGE = """
local function revoked(row) return row.revoked_at ~= nil and row.revoked_at ~= cjson.null end
local changed = false
for i = 1, #ARGV, 2 do
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  if not current or (revoked(cjson.decode(ARGV[i + 1])) and not revoked(cjson.decode(current))) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    changed = true
  end
end
if changed or redis.call('EXISTS', KEYS[2]) == 0 then return redis.call('INCR', KEYS[2]) end
return tonumber(redis.call('GET', KEYS[2]))
"""


class KeySync:
    """Pushes this replica's key changes to the store and takes in everyone else's."""

    def __init__(self, store: SharedStore, keys: KeyStore, interval_s: float) -> None:
        self.store, self.keys, self.interval_s = store, keys, interval_s
        self._hash, self._version = store.name("keys"), store.name("keys", "version")
        self._merge = store.redis.register_script(MERGE)
        self._pushed = -1  # KeyStore.changes when last pushed; -1: push everything on the first round
        self._seen: int | None = None  # the store's version last taken in
        self._nudge = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """One round before the gateway serves (so it starts with the union), then a background loop."""
        self.keys.on_change = self._nudge.set
        await self.sync()
        self._task = run_every(self.interval_s, self.sync, "shared-key-sync", wake=self._nudge)

    async def stop(self) -> None:
        self.keys.on_change = None
        await cancel(self._task)
        self._task = None

    async def sync(self) -> None:
        """Push local changes (all keys: the merge is idempotent), then take in a changed store."""
        if not self.store.available:
            return
        try:
            version = await self.store.redis.get(self._version)
            changes = self.keys.changes
            if version is None or changes != self._pushed:
                version = await self._merge(keys=[self._hash, self._version], args=self._rows())
                self._pushed = changes
            if int(version) != self._seen:
                rows = await self.store.redis.hgetall(self._hash)
                await self.keys.merge(_parse(rows))
                self._seen = int(version)
        except (RedisError, OSError) as exc:
            self.store.failed(exc, "syncing keys")
            self._pushed = -1  # the store may have lost what was pushed: push it all again once it is back
            return
        self.store.succeeded()

    def _rows(self) -> list[str]:
        args: list[str] = []
        for key in self.keys.stored():
            args += [key.id, json.dumps(key.to_json(), separators=(",", ":"))]
        return args


def _parse(rows: dict[str, str]) -> list[StoredKey]:
    """The hash's rows as keys; a row that is not a key row is skipped with a warning, not fatal."""
    keys = []
    for key_id, text in rows.items():
        try:
            key = StoredKey.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("skipping shared key row %r: %s", key_id, exc)
            continue
        keys.append(key)
    return keys
