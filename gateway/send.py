"""Step three of a proxied request: pick a replica and send, failing over until an answer opens.

Failover follows vLLM production-stack: read the upstream status and the first chunk, and only
then commit to the client. A connect error, a timeout or a 5xx up to that point is retried on
another replica (:func:`gateway.routing.choose_replica` picks it, a pure function over the snapshot);
after it, the relay has no choice but to pass a failure on. A model with no usable replica passes
the request to its next fallback. The whole opening runs within the gateway's total upstream
deadline (504), and a small non-streamed answer is read whole here, so that it can go back as one
plain response: the streaming machinery cost about as much as the rest of the proxying.

Workers of ours get the service token; external upstreams only their own API key, which is never
logged and never part of an answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass

import anyio
import httpx

from common.errors import APIError, ModelNotFoundError, ServiceUnavailableError, UpstreamTimeoutError
from gateway.deps import GatewayState
from gateway.request import ProxyRequest, body_for_model
from gateway.routing import backoff_s, choose_replica, may_retry
from gateway.upstreams import Replica

log = logging.getLogger(__name__)

# A non-streamed answer up to this size (by its Content-Length) is read whole before answering.
BUFFER_LIMIT = 1 << 20


@dataclass
class Opened:
    """An upstream answer whose status and first chunk arrived: from here on there is no failover."""

    replica: Replica
    response: httpx.Response
    first: bytes
    chunks: AsyncIterator[bytes]
    # True when ``first`` is the whole body (a small non-streamed answer read before answering).
    complete: bool = False
    deadline: float | None = None  # loop time by which the whole upstream answer must have ended

    def is_event_stream(self, wants_stream: bool) -> bool:
        content_type = self.response.headers.get("content-type", "")
        return content_type.startswith("text/event-stream") or (wants_stream and not content_type)


async def send(state: GatewayState, request: ProxyRequest, models: list[str]) -> Opened:
    """The first upstream answer to open, tried on replicas of ``models`` in turn, within the deadline.

    The chosen replica's in-flight count stays taken; the relay releases it.
    """
    limit = state.settings.upstream_deadline_s
    deadline = asyncio.get_running_loop().time() + limit if limit else None
    opened = await _within(deadline, _open_and_read(state, request, models))
    opened.deadline = deadline
    return opened


async def _within(deadline: float | None, opening: Awaitable[Opened]) -> Opened:
    """``opening`` unless the total upstream deadline passes first (504)."""
    if deadline is None:
        return await opening
    try:
        async with asyncio.timeout_at(deadline):
            return await opening
    except TimeoutError:
        raise UpstreamTimeoutError("No upstream answer started within the gateway's deadline; try again "
                                   "later or ask for less.") from None


async def _open_and_read(state: GatewayState, request: ProxyRequest, models: list[str]) -> Opened:
    """:func:`_failover`, then, for a small non-streamed answer, the rest of its body.

    Reading it here, still under the disconnect watch, keeps "a client that leaves cancels the
    upstream request" true while the answer can go back as one plain response. A failure while
    reading is kept for the relay to raise, exactly where a streamed relay would have met it.
    """
    opened = await _failover(state, request, models)
    if request.stream or opened.is_event_stream(request.stream):
        return opened
    length = opened.response.headers.get("content-length")
    if length is None or not length.isdigit() or int(length) > BUFFER_LIMIT:
        return opened
    parts = [opened.first]
    try:
        async for chunk in opened.chunks:
            parts.append(chunk)
    except httpx.HTTPError as exc:
        opened.first, opened.chunks = b"".join(parts), _failing(exc)
        return opened
    except BaseException:
        with anyio.CancelScope(shield=True):
            await opened.response.aclose()
        state.in_flight.release(opened.replica.url)
        raise
    opened.first, opened.complete = b"".join(parts), True
    return opened


async def _failing(exc: BaseException) -> AsyncIterator[bytes]:
    raise exc
    yield b""  # pragma: no cover - makes this an async generator


async def _failover(state: GatewayState, request: ProxyRequest, models: list[str]) -> Opened:
    """Try replicas until one answers below 500 with a first chunk; at most ``retries`` extra tries.

    ``models`` is the requested model then its fallbacks: a model with no usable replica (left)
    passes the request to the next one.
    """
    tried: list[str] = []
    failures: list[str] = []
    first_error: APIError | None = None
    for position, model in enumerate(models):
        while True:
            try:
                replica = choose_replica(state.upstreams.snapshot, model, request.endpoint, state.in_flight.view(),
                                         state.rng, exclude=tried, circuits=state.circuits.view(),
                                         now=time.monotonic(), rules=state.rules, turn=next(state.turns))
            except (ServiceUnavailableError, ModelNotFoundError) as exc:
                first_error = first_error or exc
                if position + 1 < len(models):
                    log.info("model %s has no usable replica; falling back to %s", model, models[position + 1])
                break
            tried.append(replica.url)
            outcome = await _attempt(state, replica, request, model)
            if isinstance(outcome, Opened):
                return outcome
            failures.append(f"{replica.url} ({outcome})")
            state.metrics.retries.labels(model, outcome.split(":")[0]).inc()
            log.warning("upstream %s failed before the first byte: %s", replica.url, outcome)
            if not may_retry(outcome, len(failures), state.settings.retries):
                raise _all_failed(state, models[0], failures)
            await asyncio.sleep(backoff_s(len(failures), state.settings.retry_backoff_s,
                                          state.settings.retry_backoff_max_s, state.rng))
    if failures:
        raise _all_failed(state, models[0], failures)
    assert first_error is not None  # the loop only ends without failures through an error
    raise first_error


def _all_failed(state: GatewayState, model: str, failures: list[str]) -> ServiceUnavailableError:
    return ServiceUnavailableError(
        f"No replica of '{model}' could answer; tried {', '.join(failures)}. Try again later.",
        headers={"Retry-After": str(state.rules.retry_after_s)},
    )


async def _attempt(state: GatewayState, replica: Replica, request: ProxyRequest, model: str) -> Opened | str:
    """One try of ``model`` on ``replica``, keeping its in-flight count and circuit up to date."""
    key = replica.url
    body = body_for_model(request.body, request.payload, replica.name_upstream(model))
    state.circuits.dispatched(key, time.monotonic())
    state.in_flight.acquire(key)
    try:
        outcome = await _open(state.client, f"{replica.base}{request.endpoint.path.removeprefix('/v1')}", body,
                              _with_auth(state, replica, request.headers), replica)
    except BaseException:
        state.in_flight.release(key)
        state.circuits.released(key)
        raise
    if isinstance(outcome, Opened):
        state.circuits.succeeded(key)
        state.metrics.record_circuit(key, state.circuits.get(key))
        state.metrics.served[key] += 1
        state.metrics.child(state.metrics.replica_requests, key).inc()
        return outcome
    state.in_flight.release(key)
    circuit = state.circuits.failed(key, time.monotonic())
    state.metrics.record_circuit(key, circuit)
    state.metrics.replica_failures.labels(key, outcome.split(":")[0]).inc()
    return outcome


def _with_auth(state: GatewayState, replica: Replica, headers: dict[str, str]) -> dict[str, str]:
    """The headers for one upstream: a worker of ours gets the service token (auth on), an external its
    own API key when one is configured, and never the service token."""
    if replica.kind != "external":
        return {**headers, **state.service_headers} if state.service_headers else headers
    key = state.api_keys.get(replica.service_id or "")
    if key is None:
        return headers
    return {**headers, "authorization": f"Bearer {key.get_secret_value()}"}


async def _open(client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str],
                replica: Replica) -> Opened | str:
    """One upstream call up to its first chunk: an :class:`Opened` answer, or a short reason why it
    may be retried."""
    try:
        response = await client.send(client.build_request("POST", url, content=body, headers=headers), stream=True)
    except httpx.TimeoutException:
        return "timeout: no answer in time"
    except httpx.TransportError as exc:
        return f"unreachable: {type(exc).__name__}"
    try:
        if response.status_code >= 500:
            await response.aclose()
            return f"upstream_5xx: HTTP {response.status_code}"
        chunks = response.aiter_raw()
        try:
            first = await anext(chunks, b"")
        except httpx.TimeoutException:
            await response.aclose()
            return "timeout: no first byte in time"
        except httpx.TransportError as exc:
            await response.aclose()
            return f"broken: {type(exc).__name__} before the first byte"
    except BaseException:
        with anyio.CancelScope(shield=True):
            await response.aclose()
        raise
    return Opened(replica, response, first, chunks)
