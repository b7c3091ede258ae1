"""Rate-limit buckets shared by every gateway replica, in Redis or Valkey.

The buckets are those of :mod:`gateway.limits` (full at the limit, refilling at limit/60 per second,
the token bucket charged after the answer and allowed to go negative), kept in two store hashes per
key (``level``, ``stamp``). Each admission is one Lua script, so concurrent requests through
different replicas never both take the last request: refill, decide, take and save happen atomically
in the store. The clock is the store's own ``TIME``, so replicas with skewed clocks still agree.
A bucket nobody touched for two minutes is full again and simply expires.

The refusal (429, ``Retry-After``, ``x-ratelimit-*``) is built by the same code as the in-process
limiter's, from the levels the script returns. When the store is unreachable the in-process limiter
answers instead (see :mod:`gateway.shared_state`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from redis.exceptions import RedisError

from common.auth import Principal
from gateway.limits import UNLIMITED, Grant, KeyLimits, Limiter, rate_limited, refusal_of
from gateway.shared_state import SharedStore

# An idle bucket refills completely within a minute; after this long it is dropped (same as full).
IDLE_MS = 120_000

# Shared by both scripts: the store's clock, and a bucket read and refilled to now (absent = full).
_LOAD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function load(key, capacity)
  if capacity <= 0 then return nil end
  local found = redis.call('HMGET', key, 'level', 'stamp')
  local level, stamp = tonumber(found[1]), tonumber(found[2])
  if level == nil or stamp == nil then return capacity end
  if now > stamp then level = math.min(capacity, level + (now - stamp) * capacity / 60) end
  return level
end
local function save(key, level)
  if level == nil then return end
  redis.call('HSET', key, 'level', string.format('%.6f', level), 'stamp', string.format('%.6f', now))
  redis.call('PEXPIRE', key, ARGV[3])
end
local function show(level)
  if level == nil then return '' end
  return string.format('%.6f', level)
end
"""

# KEYS: requests bucket, tokens bucket. ARGV: rpm, tpm (0: none), idle ms.
# Returns {admitted (1/0), requests level, tokens level} (levels as text: Lua numbers would be truncated).
ADMIT = _LOAD + """
local requests = load(KEYS[1], tonumber(ARGV[1]))
local tokens = load(KEYS[2], tonumber(ARGV[2]))
local admitted = 1
if (requests ~= nil and requests < 1) or (tokens ~= nil and tokens <= 0) then admitted = 0 end
if admitted == 1 and requests ~= nil then requests = requests - 1 end
save(KEYS[1], requests)
save(KEYS[2], tokens)
return {admitted, show(requests), show(tokens)}
"""

# KEYS: tokens bucket. ARGV: tpm, tokens used, idle ms. Returns the new level.
CHARGE = _LOAD + """
local tokens = load(KEYS[1], tonumber(ARGV[1])) - tonumber(ARGV[2])
save(KEYS[1], tokens)
return show(tokens)
"""


def snapshot(principal: Principal, requests: str, tokens: str) -> KeyLimits:
    """A key's buckets at the levels the script returned (for headers and the refusal)."""
    limits = KeyLimits(principal.rpm, principal.tpm, 0.0)
    if limits.requests is not None and requests:
        limits.requests.level = float(requests)
    if limits.tokens is not None and tokens:
        limits.tokens.level = float(tokens)
    return limits


@dataclass(frozen=True)
class SharedGrant(Grant):
    """An admission from the shared buckets: the token charge goes to the store, off the request path."""

    limiter: SharedLimiter | None = None
    principal: Principal | None = None

    def charge(self, tokens: int) -> None:
        if self.limiter is not None and self.principal is not None and self.principal.tpm and tokens > 0:
            self.limiter.charge_later(self.principal, tokens)


class SharedLimiter:
    """:class:`gateway.limits.Limiter`'s interface over the store, with the in-process one as fallback."""

    def __init__(self, store: SharedStore, fallback: Limiter) -> None:
        self.store = store
        self.fallback = fallback
        self._admit = store.redis.register_script(ADMIT)
        self._charge = store.redis.register_script(CHARGE)
        self._last: dict[str, KeyLimits] = {}  # key id -> the levels the store last answered
        self._pending: set[asyncio.Task[None]] = set()

    def _names(self, principal: Principal) -> list[str]:
        return [self.store.name("rl", principal.key_id, "requests"), self.store.name("rl", principal.key_id, "tokens")]

    def headers(self, principal: Principal) -> dict[str, str]:
        """The key's ``x-ratelimit-*`` headers as the store last reported them, taking nothing."""
        if principal.rpm is None and principal.tpm is None:
            return {}
        last = self._last.get(principal.key_id)
        return last.headers() if last is not None else self.fallback.headers(principal)

    async def acquire(self, principal: Principal) -> Grant:
        """Take one request from the key's shared budget, or raise the 429 the in-process limiter would."""
        if principal.rpm is None and principal.tpm is None:
            return UNLIMITED
        if not self.store.available:
            return self.fallback.admit(principal)
        try:
            admitted, requests, tokens = await self._admit(
                keys=self._names(principal), args=[principal.rpm or 0, principal.tpm or 0, IDLE_MS])
        except (RedisError, OSError) as exc:
            self.store.failed(exc, "admitting a request")
            return self.fallback.admit(principal)
        self.store.succeeded()
        limits = self._last[principal.key_id] = snapshot(principal, requests, tokens)
        if not int(admitted):
            # The script decided; the refusal names the limit and the wait from the same levels.
            raise refusal_of(principal, limits) or rate_limited(limits, 1.0, "requests per minute")
        return SharedGrant(limits, limits.headers(), time.monotonic, self, principal)

    async def charge(self, principal: Principal, tokens: int) -> None:
        """Take ``tokens`` from the key's shared token bucket (may go negative)."""
        if not self.store.available:  # lost: the store is down and this request was admitted there
            return
        try:
            await self._charge(keys=self._names(principal)[1:], args=[principal.tpm or 0, tokens, IDLE_MS])
        except (RedisError, OSError) as exc:
            self.store.failed(exc, "charging tokens")
            return
        self.store.succeeded()

    def charge_later(self, principal: Principal, tokens: int) -> None:
        """Charge in a task the limiter holds on to: the answer is already on its way to the client."""
        task = asyncio.get_running_loop().create_task(self.charge(principal, tokens))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for charges still in flight (the lifespan's close, before the connection goes)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
