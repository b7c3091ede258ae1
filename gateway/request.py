"""Step one of a proxied request: read the body, resolve the model, and rewrite what must change.

The gateway does not re-validate OpenAI bodies; the worker does, and its 4xx comes back unchanged.
Only ``model``, ``stream`` and what the gateway's caps need are read (and an audio upload's text
fields, :mod:`gateway.multipart`). The body is forwarded byte for byte, except that:

- a generation that sets no ``max_tokens`` gets the gateway's cap, when one is configured, so the
  cap bounds every generation and not only the ones that ask;
- a streamed generation whose client did not ask for ``stream_options.include_usage`` is sent
  upstream with it, so its tokens can be counted (:class:`gateway.accounting.StreamTap` takes the
  usage out again, so the client gets the stream it asked for);
- the model name is filled in or renamed per upstream (:func:`body_for_model`, at send time).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.requests import ClientDisconnect

from common.errors import InvalidRequestError
from common.streaming import ClientClosedError
from gateway.deps import GatewayState
from gateway.metrics import NO_MODEL
from gateway.multipart import FormPayload, parse_form
from gateway.routing import VISION_CHAT, Endpoint, resolve_model

# Request headers worth passing on; anything else (auth, cookies, hop-by-hop) stays here.
FORWARD_REQUEST_HEADERS = ("content-type", "accept", "x-request-id")
# Capabilities whose answers are generated text (and so have max_tokens, streams and completion tokens).
GENERATING = frozenset({"chat", "completions", "vision"})


@dataclass
class ProxyRequest:
    """A client's request as the gateway forwards it: parsed, its model resolved, its body rewritten."""

    endpoint: Endpoint  # VISION_CHAT for a chat request with image parts
    model: str
    label: str  # the metrics label: ``model`` when the snapshot knows it, else "-"
    payload: dict[str, Any]  # the body's JSON object (or form fields), as rewritten
    body: bytes  # the bytes to forward (before the model is renamed for one upstream)
    headers: dict[str, str]  # the headers to forward
    stream: bool
    images: bool
    strip_usage: bool  # the client did not ask for usage; the gateway did

    @property
    def generates(self) -> bool:
        return self.endpoint.capability in GENERATING


async def read_request(state: GatewayState, request: Request, endpoint: Endpoint, default: str | None,
                       request_id: str) -> ProxyRequest:
    """The request as it will be forwarded; 400 for a body that is not a JSON object (or form)."""
    try:
        raw = await request.body()
    except ClientDisconnect:
        raise ClientClosedError("The client closed the connection while sending the body.") from None
    payload = parse_form(raw, request.headers.get("content-type", "")) if endpoint.form else parse_body(raw)
    images = endpoint.capability == "chat" and has_image_parts(payload)
    if images:  # no model: the multimodal default; a text-only model: 400 rather than a worker's
        endpoint, default = VISION_CHAT, state.settings.default_multimodal_model
    snapshot = state.upstreams.snapshot
    model = resolve_model(snapshot, payload.get("model"), endpoint, default)
    stream = payload.get("stream") is True
    generates = endpoint.capability in GENERATING
    if generates and state.settings.max_tokens_limit is not None:
        raw, payload = with_default_max_tokens(raw, payload, state.settings.max_tokens_limit)
    strip_usage = stream and generates and not asks_for_usage(payload)
    if strip_usage:
        raw, payload = with_usage_requested(raw, payload)
    headers = {k: v for k in FORWARD_REQUEST_HEADERS if (v := request.headers.get(k)) is not None}
    headers.update({"x-request-id": request_id, "accept-encoding": "identity"})
    label = model if model in snapshot.known_models() else NO_MODEL
    return ProxyRequest(endpoint, model, label, payload, raw, headers, stream, images, strip_usage)


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
    """The bytes to forward: the original ones, or with the model name this upstream expects (the
    resolved default filled in, an external's or a fallback's name; the body is then re-serialised)."""
    if payload.get("model") == model:
        return raw
    if isinstance(payload, FormPayload):
        return payload.body_with_model(raw, model)
    return json.dumps({**payload, "model": model}, separators=(",", ":")).encode()


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
