"""Replica choice: pure functions over a :class:`Snapshot` and the gateway's in-flight counts.

No I/O and no clock here, and randomness comes in as an argument, so every routing rule is tested
by calling a function. Policy: healthy replicas that serve the model, least outstanding requests
by power of two choices (sample two, take the less loaded) — cheap, and it avoids the herd that
"always the global minimum" causes when many gateways share stale counts.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from common.errors import InvalidRequestError, ModelNotFoundError, ServiceUnavailableError
from common.records import CAPABILITIES
from gateway.upstreams import Replica, Snapshot


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI endpoint the gateway proxies: the capability it needs and its default model type."""

    path: str
    capability: str
    default_type: str


CHAT = Endpoint("/v1/chat/completions", "chat", "llm")
COMPLETIONS = Endpoint("/v1/completions", "completions", "llm")
EMBEDDINGS = Endpoint("/v1/embeddings", "embeddings", "embedding")


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


def choose_replica(
    snapshot: Snapshot,
    model: str,
    endpoint: Endpoint,
    in_flight: Mapping[str, int],
    rng: random.Random,
    exclude: Collection[str] = (),
) -> Replica:
    """Pick the replica for one attempt; ``exclude`` holds the URLs that already failed this request."""
    known = snapshot.known_models()
    silent = sum(1 for r in snapshot.replicas if r.model is None)
    if model not in known and silent:
        # A worker that never answered may serve it (still starting): "try later", not "no such model".
        raise ServiceUnavailableError(
            f"The model '{model}' is not available right now; {silent} worker(s) have not answered yet."
        )
    if model not in known:
        available = sorted({r.model for r in snapshot.healthy() if r.model is not None})
        listing = ", ".join(available) if available else "none are available right now"
        raise ModelNotFoundError(f"The model '{model}' does not exist. Available models: {listing}.",
                                 param="model")
    if not _can_serve(known[model], endpoint):
        raise InvalidRequestError(
            f"The model '{model}' is a {known[model]} model and does not support {endpoint.path}.",
            param="model", code="model_not_supported",
        )
    serving = [r for r in snapshot.healthy() if r.model == model]
    candidates = [r for r in serving if r.url not in exclude]
    if not candidates:
        if serving:
            raise ServiceUnavailableError(f"Every replica of '{model}' failed this request; try again later.")
        raise ServiceUnavailableError(f"The model '{model}' has no healthy replica right now; try again later.")
    return pick_least_loaded(candidates, in_flight, rng)


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


def _can_serve(model_type: str | None, endpoint: Endpoint) -> bool:
    # A replica of unknown type is given the benefit of the doubt; the worker answers for itself.
    return model_type is None or endpoint.capability in CAPABILITIES.get(model_type, [endpoint.capability])
