"""Replica choice: pure functions over a :class:`Snapshot` and the gateway's own live counters.

No I/O and no clock here (``now`` is an argument), and randomness comes in as an argument, so every
routing rule is tested by calling a function. A replica is *usable* when its snapshot says healthy,
its circuit admits a request and its GPU reports are not bad. Among the usable replicas of a model,
the lowest ``priority`` tier that has a replica below its capacity wins (so external upstreams,
configured at a lower priority, only take traffic when every local replica is unusable or
saturated); within the tier the policy picks: least outstanding requests by power of two choices
(sample two, take the less loaded; cheap, and it avoids the herd that "always the global minimum"
causes with stale counts) or round-robin.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from common.errors import InvalidRequestError, ModelNotFoundError, ServiceUnavailableError
from common.records import CAPABILITIES
from gateway.circuit import CLOSED, Circuit, admits
from gateway.upstreams import Replica, Snapshot

Policy = Literal["least_outstanding", "round_robin"]
# Failure kinds (the part of an attempt's outcome before ":") worth trying on another replica.
RETRYABLE = frozenset({"timeout", "unreachable", "upstream_5xx", "broken"})


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI endpoint the gateway proxies: the capability it needs and its default model type."""

    path: str
    capability: str
    default_type: str
    # multipart/form-data bodies (audio uploads): ``model`` is read from the form, not from JSON.
    form: bool = False


CHAT = Endpoint("/v1/chat/completions", "chat", "llm")
COMPLETIONS = Endpoint("/v1/completions", "completions", "llm")
EMBEDDINGS = Endpoint("/v1/embeddings", "embeddings", "embedding")
TRANSCRIPTIONS = Endpoint("/v1/audio/transcriptions", "transcription", "transcription", form=True)
TRANSLATIONS = Endpoint("/v1/audio/translations", "transcription", "transcription", form=True)
RERANK = Endpoint("/v1/rerank", "rerank", "rerank")
# A chat request carrying image parts: same path, but it needs a model with the "vision" capability.
VISION_CHAT = Endpoint("/v1/chat/completions", "vision", "multimodal")


def resolve_model(snapshot: Snapshot, requested: object, endpoint: Endpoint, default: str | None) -> str:
    """The model id a request asks for; when absent, the configured or first healthy default.

    The fallback default is the first healthy replica (configured order) of the endpoint's type,
    then of any type able to serve the endpoint, so the choice is stable between requests.
    """
    if requested is not None and not isinstance(requested, str):
        raise InvalidRequestError("'model' must be a string naming the model to use.", param="model",
                                  code="invalid_type")
    if isinstance(requested, str) and requested.strip():
        return requested
    if default:
        return default
    healthy = snapshot.healthy()
    for wanted in (lambda r: r.type == endpoint.default_type, lambda r: _can_serve(r.type, endpoint)):
        for replica in healthy:
            if replica.model is not None and wanted(replica):
                return replica.model
    raise ServiceUnavailableError(
        f"No 'model' was given and no healthy {endpoint.default_type} model is available for "
        f"{endpoint.path}; name a model or try again later."
    )


def check_accepts_images(snapshot: Snapshot, model: str) -> None:
    """400 when a request with images names a model known to be text-only (unknown: the worker decides)."""
    model_type = snapshot.known_models().get(model)
    if model_type is not None and not _can_serve(model_type, VISION_CHAT):
        vision = sorted({r.model for r in snapshot.healthy() if r.model and _can_serve(r.type, VISION_CHAT)
                         and r.type is not None})
        hint = f" Models that accept images: {', '.join(vision)}." if vision else ""
        raise InvalidRequestError(
            f"The model '{model}' is {_a(model_type)} model and does not accept images; send text only or "
            f"use a multimodal model.{hint}", param="messages", code="model_not_multimodal",
        )


@dataclass(frozen=True)
class Rules:
    """The knobs routing obeys (from settings); the defaults suit tests and small clusters."""

    policy: Policy = "least_outstanding"
    cooldown_s: float = 5.0  # an open circuit lets one probe through after this long
    gpu_memory_limit: float | None = None  # used/total at or above this fraction = memory exhausted
    retry_after_s: int = 1  # what a 503 "no usable replica" tells clients to wait


DEFAULT_RULES = Rules()


def choose_replica(
    snapshot: Snapshot,
    model: str,
    endpoint: Endpoint,
    in_flight: Mapping[str, int],
    rng: random.Random,
    exclude: Collection[str] = (),
    *,
    circuits: Mapping[str, Circuit] | None = None,
    now: float = 0.0,
    rules: Rules = DEFAULT_RULES,
    turn: int = 0,
) -> Replica:
    """Pick the replica for one attempt; ``exclude`` holds the URLs that already failed this request.

    ``turn`` is the gateway's request counter, used only by round-robin.
    """
    _check_model(snapshot, model, endpoint, rules)
    circuits = circuits or {}
    serving = snapshot.serving(model)
    candidates = [r for r in serving if r.url not in exclude] if exclude else list(serving)
    usable = [r for r in candidates if _skip_reason(r, circuits, now, rules) is None]
    if not usable:
        raise _unavailable(model, serving, candidates, circuits, now, rules)
    tier = preferred_tier(usable, in_flight)
    if rules.policy == "round_robin":
        return tier[turn % len(tier)]
    return pick_least_loaded(tier, in_flight, rng)


def _check_model(snapshot: Snapshot, model: str, endpoint: Endpoint, rules: Rules) -> None:
    """404 for a model nobody serves, 400 for the wrong endpoint, 503 while workers are silent."""
    known = snapshot.known_models()
    silent = snapshot.silent
    if model not in known and silent:
        # A worker that never answered may serve it (still starting): "try later", not "no such model".
        raise ServiceUnavailableError(
            f"The model '{model}' is not available right now; {silent} worker(s) have not answered yet.",
            headers=_retry_after(rules),
        )
    if model not in known:
        available = sorted({r.model for r in snapshot.healthy() if r.model is not None})
        listing = ", ".join(available) if available else "none are available right now"
        raise ModelNotFoundError(f"The model '{model}' does not exist. Available models: {listing}.",
                                 param="model")
    if not _can_serve(known[model], endpoint):
        raise InvalidRequestError(
            f"The model '{model}' is {_a(known[model])} model and does not support {endpoint.path}.",
            param="model", code="model_not_supported",
        )


def _unavailable(model: str, serving: Sequence[Replica], candidates: list[Replica], circuits: Mapping[str, Circuit],
                 now: float, rules: Rules) -> ServiceUnavailableError:
    """The 503 for a model with no usable replica, saying why (and when to come back)."""
    headers = _retry_after(rules)
    if serving and not candidates:
        return ServiceUnavailableError(f"Every replica of '{model}' failed this request; try again later.",
                                       headers=headers)
    if candidates:
        reasons = "; ".join(f"{r.url}: {_skip_reason(r, circuits, now, rules)}" for r in candidates)
        return ServiceUnavailableError(f"No replica of '{model}' can take requests right now ({reasons}); "
                                       "try again later.", headers=headers)
    return ServiceUnavailableError(f"The model '{model}' has no healthy replica right now; try again later.",
                                   headers=headers)


def _retry_after(rules: Rules) -> dict[str, str]:
    return {"Retry-After": str(max(1, rules.retry_after_s))}


def preferred_tier(usable: list[Replica], in_flight: Mapping[str, int]) -> list[Replica]:
    """The replicas of the best priority that still has room; when all are saturated, the best tier.

    Lower ``priority`` is preferred. A replica is saturated when its in-flight count reached its
    capacity (unknown capacity: never saturated), so a lower-priority tier (externals, hosted APIs)
    only takes traffic when every preferred replica is unusable or full.
    """
    tiers = sorted({r.priority for r in usable})
    for priority in tiers:
        room = [r for r in usable if r.priority == priority and not saturated(r, in_flight)]
        if room:
            return room
    return [r for r in usable if r.priority == tiers[0]]


def saturated(replica: Replica, in_flight: Mapping[str, int]) -> bool:
    return replica.capacity is not None and in_flight.get(replica.url, 0) >= replica.capacity


def is_usable(replica: Replica, circuits: Mapping[str, Circuit], now: float, rules: Rules = DEFAULT_RULES) -> bool:
    """Healthy, circuit admitting and GPU fine: what ``/v1/models`` and routing agree on."""
    return replica.healthy and _skip_reason(replica, circuits, now, rules) is None


def _skip_reason(replica: Replica, circuits: Mapping[str, Circuit], now: float, rules: Rules) -> str | None:
    circuit = circuits.get(replica.url, CLOSED)
    if not admits(circuit, now, rules.cooldown_s):
        return f"circuit {circuit.state} after {circuit.consecutive_failures} failures"
    return gpu_problem(replica, rules.gpu_memory_limit)


def gpu_problem(replica: Replica, memory_limit: float | None) -> str | None:
    """Why the replica's GPU reports say "do not send work here", or None.

    An NVML error always counts; memory only when a limit is set (GATEWAY_GPU_MEMORY_LIMIT, off by
    default because NVML shows memory a process has reserved, which caching allocators keep).

    Only the replica's own GPUs count when its readings include them (a container may see the
    whole host through NVML). No readings at all (CPU worker, external) is not a problem.
    """
    own = [g for g in replica.gpus if g.index in replica.gpu_indices]
    for gpu in own or replica.gpus:
        if gpu.error:
            return f"GPU {gpu.index} reports an error: {gpu.error}"
        used, total = gpu.memory_used_mb, gpu.memory_total_mb
        if memory_limit is not None and used is not None and total and used / total >= memory_limit:
            return f"GPU {gpu.index} memory exhausted ({used:.0f}/{total:.0f} MiB)"
    return None


def pick_least_loaded(candidates: list[Replica], in_flight: Mapping[str, int], rng: random.Random) -> Replica:
    """Power of two choices: sample two distinct replicas, keep the one with fewer requests in flight.

    On a tie the first sampled wins, which is itself random, so equal replicas share the load.
    """
    if len(candidates) == 1:
        return candidates[0]
    first, second = rng.sample(candidates, 2)
    if in_flight.get(second.url, 0) < in_flight.get(first.url, 0):
        return second
    return first


def fallback_chain(model: str, fallbacks: Mapping[str, str], limit: int = 4) -> list[str]:
    """``model`` then its configured fallbacks in order, stopping at a repeat (no cycles) or ``limit``."""
    chain = [model]
    while len(chain) < limit and (nxt := fallbacks.get(chain[-1])) is not None and nxt not in chain:
        chain.append(nxt)
    return chain


def may_retry(reason: str, attempts_made: int, retries: int) -> bool:
    """Whether a failed attempt gets another try: a retryable kind and budget left (``retries`` extra)."""
    return reason.split(":", 1)[0] in RETRYABLE and attempts_made <= retries


def backoff_s(retry: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Delay before retry number ``retry`` (1-based): exponential, capped, half of it jittered.

    Small on purpose: the retry goes to another replica, so the wait only spreads a burst of
    retries after one replica dies; it is not waiting for that replica to come back.
    """
    if retry <= 0 or base_s <= 0:
        return 0.0
    ceiling = min(cap_s, base_s * math.pow(2, retry - 1))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def _can_serve(model_type: str | None, endpoint: Endpoint) -> bool:
    # A replica of unknown type is given the benefit of the doubt; the worker answers for itself.
    return model_type is None or endpoint.capability in CAPABILITIES.get(model_type, [endpoint.capability])


def _a(word: str) -> str:
    """``word`` with its indefinite article: "an embedding", "an llm" (said "an el-el-em"), "a multimodal"."""
    return f"{'an' if word[:1].lower() in 'aeiou' or word.lower() == 'llm' else 'a'} {word}"
