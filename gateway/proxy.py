"""The streaming reverse proxy: read ``model``/``stream``, pick a replica, pass the bytes through.

The gateway does not re-validate OpenAI bodies; the worker does, and its 4xx comes back unchanged.
The body is forwarded byte for byte, except that a request without ``model`` gets the resolved
default model id added, and a request sent to an external upstream (or to a fallback model) gets
the model name that upstream expects (the body is then re-serialised), so any OpenAI-compatible
worker, vLLM included, knows what it is asked for. An external's API key is added as a bearer token
on the upstream call only; it is never logged and never part of an answer.

Failover follows vLLM production-stack: read the upstream status and the first chunk, and only
then commit to the client. A connect error, a timeout or a 5xx up to that point is retried on
another replica; after it, a failure ends an SSE stream with one ``data: {"error": ...}`` event.
A small non-streamed answer is read whole while the disconnect watch still runs and goes back as one
plain response: the streaming machinery cost about as much as the rest of the proxying.

Before any worker is called, the caller's key must allow the resolved model, the request must be
within the gateway's caps (``max_tokens``, embedding inputs) and the key within its rate limits; a
refused request never reaches a worker. A streamed generation whose client did not ask for
``stream_options.include_usage`` is sent upstream with it, so its tokens can be counted (the relay
strips it again). Workers of ours get the service token; external upstreams only their own API key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import anyio
import httpx
from fastapi import Request
from starlette.requests import ClientDisconnect

from common.auth import principal_of
from common.errors import (
    APIError,
    InvalidRequestError,
    ModelNotFoundError,
    ServiceUnavailableError,
    UpstreamTimeoutError,
)
from gateway.access import check_model_allowed
from gateway.deps import GatewayState
from gateway.limits import RateLimitError, check_request_caps
from gateway.multipart import FormPayload, parse_form
from gateway.relay import Exchange, Opened, is_event_stream, respond
from gateway.responses import UpstreamAnswer, UpstreamStream
from gateway.routing import (
    VISION_CHAT,
    Endpoint,
    backoff_s,
    check_accepts_images,
    choose_replica,
    fallback_chain,
    may_retry,
    resolve_model,
)
from gateway.upstreams import Replica

log = logging.getLogger(__name__)

# Request headers worth passing on; anything else (auth, cookies, hop-by-hop) stays here.
FORWARD_REQUEST_HEADERS = ("content-type", "accept", "x-request-id")


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 in OpenAI's shape."""
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser goes
        raise InvalidRequestError(
            f"We could not parse the JSON body of your request ({exc}). The body must be valid JSON.",
            code="invalid_json",
        ) from None
    if not isinstance(payload, dict):
        raise InvalidRequestError("The request body must be a JSON object.", code="invalid_json")
    return payload


def has_image_parts(payload: dict[str, Any]) -> bool:
    """Whether any chat message has an ``image_url`` part: a shallow look, nothing validated (the
    worker validates the request; the gateway only needs to know where images may go)."""
    messages = payload.get("messages")
    if not isinstance(messages, list):
        return False
    return any(isinstance(m, dict) and isinstance(content := m.get("content"), list)
               and any(isinstance(p, dict) and p.get("type") == "image_url" for p in content)
               for m in messages)


def body_for_model(raw: bytes, payload: dict[str, Any], model: str) -> bytes:
    """The bytes to forward: the original ones, or with the resolved default model filled in."""
    if payload.get("model") == model:
        return raw
    if isinstance(payload, FormPayload):
        return payload.body_with_model(raw, model)
    return json.dumps({**payload, "model": model}, separators=(",", ":")).encode()


async def forward(state: GatewayState, request: Request, endpoint: Endpoint,
                  default: str | None) -> UpstreamStream | UpstreamAnswer:
    """Answer one OpenAI request by proxying it; typed errors carry the request id back."""
    principal = principal_of(request)
    exchange = Exchange(state, endpoint, principal, request.headers.get("x-request-id") or uuid.uuid4().hex,
                        request.client.host if request.client else None)
    try:
        try:
            raw = await request.body()
        except ClientDisconnect:
            raise ClientClosedRequest("The client closed the connection while sending the body.") from None
        payload = parse_form(raw, request.headers.get("content-type", "")) if endpoint.form else parse_body(raw)
        images = endpoint.capability == "chat" and has_image_parts(payload)
        if images:  # no model: the multimodal default; a text-only model: 400 rather than a worker's
            endpoint, default = VISION_CHAT, state.settings.default_multimodal_model
        model = exchange.model = resolve_model(state.upstreams.snapshot, payload.get("model"), endpoint, default)
        if model in state.upstreams.snapshot.known_models():
            exchange.label = model
        check_model_allowed(principal, model)
        if images:
            check_accepts_images(state.upstreams.snapshot, model)
        generates = endpoint.capability in GENERATING
        check_request_caps(payload, generates=generates, embeds=endpoint.capability == "embeddings",
                           max_tokens=state.settings.max_tokens_limit,
                           max_inputs=state.settings.max_embedding_inputs)
        if generates and state.settings.max_tokens_limit is not None:
            raw, payload = with_default_max_tokens(raw, payload, state.settings.max_tokens_limit)
        exchange.stream = wants_stream = payload.get("stream") is True
        if state.usage.content:
            exchange.prompt = prompt_of(payload)
        exchange.grant = state.limits.admit(principal)
        if wants_stream and generates and not asks_for_usage(payload):
            raw, payload = with_usage_requested(raw, payload)
            exchange.strip_usage = True
        headers = {k: v for k in FORWARD_REQUEST_HEADERS if (v := request.headers.get(k)) is not None}
        headers.update({"x-request-id": exchange.request_id, "accept-encoding": "identity"})
        chain = [m for m in fallback_chain(model, state.settings.fallbacks) if principal.allows_model(m)]
        if state.settings.upstream_deadline_s:
            exchange.deadline = asyncio.get_running_loop().time() + state.settings.upstream_deadline_s
        opening = _within(exchange.deadline, _open_and_read(state, endpoint, chain, raw, payload, headers,
                                                            wants_stream))
        opened = await _unless_client_leaves(request, opening)
    except APIError as exc:
        _refused(exchange, exc)
        raise
    return respond(exchange, opened, wants_stream)


# Capabilities whose answers are generated text (and so have max_tokens, streams and completion tokens).
GENERATING = frozenset({"chat", "completions", "vision"})


def _refused(exchange: Exchange, exc: APIError) -> None:
    """Account for a request answered with an error before any upstream answer was relayed."""
    exc.headers.setdefault("x-request-id", exchange.request_id)
    for name, value in exchange.state.limits.headers(exchange.principal).items():
        exc.headers.setdefault(name, value)
    if isinstance(exc, RateLimitError):
        exchange.state.metrics.child(exchange.state.metrics.rate_limited, exchange.label).inc()
    exchange.finish(exc.status, error=exc.code or exc.type)


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


def asks_for_usage(payload: dict[str, Any]) -> bool:
    options = payload.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def with_usage_requested(raw: bytes, payload: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """The body with ``stream_options.include_usage`` on: spliced into the bytes when the client sent
    no ``stream_options`` (no re-serialisation), else the options merged and the body re-serialised.
    Options that are not an object are left alone for the worker to refuse (400 naming the param)."""
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        return raw, payload
    asked = {**payload, "stream_options": {**(options if isinstance(options, dict) else {}), "include_usage": True}}
    opening = raw.find(b"{")
    if "stream_options" not in payload and opening >= 0:
        return raw[:opening + 1] + b'"stream_options":{"include_usage":true},' + raw[opening + 1:], asked
    return json.dumps(asked, separators=(",", ":")).encode(), asked


def with_default_max_tokens(raw: bytes, payload: dict[str, Any], cap: int) -> tuple[bytes, dict[str, Any]]:
    """A request that sets no ``max_tokens`` (nor ``max_completion_tokens``) gets the gateway's cap, so
    the cap bounds every generation, not only the ones that ask; one that sets it is left as it is."""
    if isinstance(payload, FormPayload) or "max_tokens" in payload or "max_completion_tokens" in payload:
        return raw, payload
    capped = {**payload, "max_tokens": cap}
    return json.dumps(capped, separators=(",", ":")).encode(), capped


def prompt_of(payload: dict[str, Any]) -> Any:
    """What the user sent, for content logging: messages, prompt or input (uploads are not logged)."""
    for key in ("messages", "prompt", "input"):
        if key in payload:
            return payload[key]
    return None


class ClientClosedRequest(APIError):
    """The client left before the answer started (nginx's 499); nobody reads this response."""

    status, type, code = 499, "invalid_request_error", "client_closed_request"


async def _unless_client_leaves(request: Request, opening: Awaitable[Opened]) -> Opened:
    """Await ``opening`` but cancel it when the client disconnects first.

    Without this a non-streaming request whose client gave up would still run to the end on the
    worker, since nothing is sent back (and no disconnect noticed) until the upstream answers.
    """
    work = asyncio.ensure_future(opening)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
    if work.cancelled():
        raise ClientClosedRequest("The client closed the connection before the answer started.")
    return work.result()


async def _disconnected(request: Request) -> None:
    # The body is already read, so the next ASGI message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def open_upstream(state: GatewayState, endpoint: Endpoint, chain: list[str], raw: bytes,
                        payload: dict[str, Any], headers: dict[str, str]) -> Opened:
    """Try replicas until one answers below 500 with a first chunk; at most ``retries`` extra tries.

    ``chain`` is the requested model then its fallbacks: a model with no usable replica (left) passes
    the request to the next one. The chosen replica's in-flight count stays taken on success; the
    stream releases it.
    """
    tried: list[str] = []
    failures: list[str] = []
    first_error: APIError | None = None
    for position, model in enumerate(chain):
        while True:
            try:
                replica = choose_replica(state.upstreams.snapshot, model, endpoint, state.in_flight.view(),
                                         state.rng, exclude=tried, circuits=state.circuits.view(),
                                         now=time.monotonic(), rules=state.rules, turn=next(state.turns))
            except (ServiceUnavailableError, ModelNotFoundError) as exc:
                first_error = first_error or exc
                if position + 1 < len(chain):
                    log.info("model %s has no usable replica; falling back to %s", model, chain[position + 1])
                break
            tried.append(replica.url)
            body = body_for_model(raw, payload, replica.name_upstream(model))
            outcome = await _attempt_on(state, replica, endpoint, body, headers)
            if isinstance(outcome, Opened):
                return outcome
            failures.append(f"{replica.url} ({outcome})")
            state.metrics.retries.labels(model, outcome.split(":")[0]).inc()
            log.warning("upstream %s failed before the first byte: %s", replica.url, outcome)
            if not may_retry(outcome, len(failures), state.settings.retries):
                raise _all_failed(state, chain[0], failures)
            await asyncio.sleep(backoff_s(len(failures), state.settings.retry_backoff_s,
                                          state.settings.retry_backoff_max_s, state.rng))
    if failures:
        raise _all_failed(state, chain[0], failures)
    assert first_error is not None  # the loop only ends without failures through an error
    raise first_error


# A non-streamed answer up to this size (by its Content-Length) is read whole before answering.
BUFFER_LIMIT = 1 << 20


async def _open_and_read(state: GatewayState, endpoint: Endpoint, chain: list[str], raw: bytes,
                         payload: dict[str, Any], headers: dict[str, str], wants_stream: bool) -> Opened:
    """:func:`open_upstream`, then, for a small non-streamed answer, the rest of its body.

    Reading it here, still under the disconnect watch, keeps "a client that leaves cancels the
    upstream request" true while the answer can go back as one plain response. A failure while
    reading is kept for the relay to raise, exactly where a streamed relay would have met it.
    """
    opened = await open_upstream(state, endpoint, chain, raw, payload, headers)
    if wants_stream or is_event_stream(opened.response, wants_stream):
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


def _all_failed(state: GatewayState, model: str, failures: list[str]) -> ServiceUnavailableError:
    return ServiceUnavailableError(
        f"No replica of '{model}' could answer; tried {', '.join(failures)}. Try again later.",
        headers={"Retry-After": str(state.rules.retry_after_s)},
    )


async def _attempt_on(state: GatewayState, replica: Replica, endpoint: Endpoint, body: bytes,
                      headers: dict[str, str]) -> Opened | str:
    """One try on ``replica``, keeping its in-flight count and circuit up to date."""
    key = replica.url
    state.circuits.dispatched(key, time.monotonic())
    state.in_flight.acquire(key)
    try:
        outcome = await _attempt(state.client, replica, endpoint, body, _with_auth(state, replica, headers))
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


async def _attempt(client: httpx.AsyncClient, replica: Replica, endpoint: Endpoint, body: bytes,
                   headers: dict[str, str]) -> Opened | str:
    """One upstream try: an :class:`Opened` answer, or a short reason why it may be retried."""
    url = f"{replica.base}{endpoint.path.removeprefix('/v1')}"
    request = client.build_request("POST", url, content=body, headers=headers)
    try:
        response = await client.send(request, stream=True)
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
