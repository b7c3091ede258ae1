"""Per-key rate limits and per-request caps, checked before any worker is called.

A user key may carry ``rpm`` (requests per minute) and ``tpm`` (tokens per minute). Each is a token
bucket in memory, full at the limit and refilling at limit/60 per second, so a key may burst up to its
limit and then settles at the rate. A request takes one from the request bucket when admitted. Tokens
cannot be known up front, so the token bucket is charged after the answer with the usage the worker
reported, and a request is refused while the key's token bucket is empty (at or below zero): one long
answer may overdraw it, and the key then waits until it has refilled above zero.

A refused request gets OpenAI's 429 (``rate_limit_error`` / ``rate_limit_exceeded``) with ``Retry-After``,
before it reaches any worker. Every answer to a limited key carries OpenAI's ``x-ratelimit-*`` headers.
Without shared state the buckets live in this process only: several gateway replicas each enforce
the full limit. With ``GATEWAY_REDIS_URL`` set, :mod:`gateway.shared_limits` keeps the same buckets in
Redis (one atomic script per admission), so every replica draws from one budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from common.auth import Principal
from common.errors import APIError, InvalidRequestError

SECONDS_PER_MINUTE = 60.0


class RateLimitError(APIError):
    """A key over its requests or tokens per minute (OpenAI's 429 for rate limits)."""

    status, type, code = 429, "rate_limit_error", "rate_limit_exceeded"


@dataclass
class Bucket:
    """A token bucket of ``capacity`` refilling at ``capacity`` per minute; ``level`` may go negative."""

    capacity: float
    level: float
    stamp: float

    @property
    def rate(self) -> float:
        return self.capacity / SECONDS_PER_MINUTE

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def seconds_until(self, level: float) -> float:
        """How long until the bucket holds ``level`` (0 when it already does)."""
        return max(0.0, (level - self.level) / self.rate)


def duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1s``, ``59.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest, 3):g}s"


class KeyLimits:
    """The two buckets of one key (either may be absent)."""

    def __init__(self, rpm: int | None, tpm: int | None, now: float) -> None:
        self.requests = Bucket(rpm, rpm, now) if rpm else None
        self.tokens = Bucket(tpm, tpm, now) if tpm else None

    def refill(self, now: float) -> None:
        for bucket in (self.requests, self.tokens):
            if bucket is not None:
                bucket.refill(now)

    def headers(self) -> dict[str, str]:
        """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` for the buckets the key has."""
        out: dict[str, str] = {}
        for kind, bucket in (("requests", self.requests), ("tokens", self.tokens)):
            if bucket is None:
                continue
            out[f"x-ratelimit-limit-{kind}"] = str(int(bucket.capacity))
            out[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(bucket.level)))
            out[f"x-ratelimit-reset-{kind}"] = duration(bucket.seconds_until(bucket.capacity))
        return out


@dataclass(frozen=True)
class Grant:
    """An admitted request of a limited key: the headers to answer with, and where to charge tokens."""

    limits: KeyLimits | None
    headers: dict[str, str]
    clock: Callable[[], float]

    def charge(self, tokens: int) -> None:
        if self.limits is not None and self.limits.tokens is not None and tokens > 0:
            self.limits.tokens.refill(self.clock())
            self.limits.tokens.level -= tokens


UNLIMITED = Grant(None, {}, time.monotonic)


class RateLimits(Protocol):
    """What the request path asks of a limiter: this process's :class:`Limiter`, or the buckets shared
    by every gateway replica (:class:`gateway.shared_limits.SharedLimiter`)."""

    def headers(self, principal: Principal) -> dict[str, str]: ...

    async def acquire(self, principal: Principal) -> Grant: ...


class Limiter:
    """Every limited key's buckets, by key id; keys without limits cost one attribute check."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._keys: dict[str, KeyLimits] = {}

    def _limits_of(self, principal: Principal, now: float) -> KeyLimits:
        found = self._keys.get(principal.key_id)
        if found is None:
            found = self._keys[principal.key_id] = KeyLimits(principal.rpm, principal.tpm, now)
        else:
            found.refill(now)
        return found

    def headers(self, principal: Principal) -> dict[str, str]:
        """The key's current ``x-ratelimit-*`` headers, taking nothing (for answers refused earlier)."""
        if principal.rpm is None and principal.tpm is None:
            return {}
        return self._limits_of(principal, self._clock()).headers()

    def admit(self, principal: Principal) -> Grant:
        """Take one request from the key's budget, or raise :class:`RateLimitError` with ``Retry-After``."""
        if principal.rpm is None and principal.tpm is None:
            return UNLIMITED
        limits = self._limits_of(principal, self._clock())
        refusal = refusal_of(principal, limits)
        if refusal is not None:
            raise refusal
        if limits.requests is not None:
            limits.requests.level -= 1
        return Grant(limits, limits.headers(), self._clock)

    async def acquire(self, principal: Principal) -> Grant:
        """:meth:`admit` behind the interface the shared limiter has (its admission awaits the store)."""
        return self.admit(principal)


def refusal_of(principal: Principal, limits: KeyLimits) -> RateLimitError | None:
    """The 429 for a key whose buckets (refilled to now) cannot admit a request, or None.

    A request needs one whole request in the request bucket and a token bucket above zero; the wait
    is until both hold, named by the limit that takes longer."""
    requests, tokens = limits.requests, limits.tokens
    wait, what = 0.0, ""
    if requests is not None and requests.level < 1:
        wait, what = requests.seconds_until(1), f"requests per minute (limit {principal.rpm})"
    if tokens is not None and tokens.level <= 0:
        token_wait = tokens.seconds_until(min(1.0, tokens.capacity))
        if token_wait > wait:
            wait, what = token_wait, f"tokens per minute (limit {principal.tpm})"
    if not what:
        return None
    return rate_limited(limits, wait, what)


def rate_limited(limits: KeyLimits, wait: float, what: str) -> RateLimitError:
    """OpenAI's 429 with the key's headers and ``Retry-After`` (whole seconds, at least one)."""
    headers = {**limits.headers(), "Retry-After": str(max(1, math.ceil(wait)))}
    return RateLimitError(f"Rate limit reached for this API key on {what}. Please try again in "
                          f"{duration(wait)}.", headers=headers)


def check_request_caps(payload: dict[str, Any], *, generates: bool, embeds: bool, max_tokens: int | None,
                       max_inputs: int | None) -> None:
    """400 for a ``max_tokens`` above ``GATEWAY_MAX_TOKENS_LIMIT`` or more embedding inputs than
    ``GATEWAY_MAX_EMBEDDING_INPUTS``, naming the parameter; malformed values are the worker's to judge."""
    if generates and max_tokens is not None:
        for param in ("max_tokens", "max_completion_tokens"):
            value = payload.get(param)
            if isinstance(value, int) and not isinstance(value, bool) and value > max_tokens:
                raise InvalidRequestError(
                    f"'{param}' is {value}, above this gateway's limit of {max_tokens}; ask for at most "
                    f"{max_tokens} tokens.", param=param, code="max_tokens_too_large")
    if embeds and max_inputs is not None:
        count = embedding_inputs(payload.get("input"))
        if count > max_inputs:
            raise InvalidRequestError(
                f"'input' holds {count} inputs, above this gateway's limit of {max_inputs} per request; "
                "split it into smaller requests.", param="input", code="too_many_inputs")


def embedding_inputs(value: object) -> int:
    """How many texts an embeddings ``input`` holds: a string or one token list is one input."""
    if isinstance(value, list) and value and not all(isinstance(v, int) for v in value):
        return len(value)
    return 1
