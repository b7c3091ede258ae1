"""The streaming reverse proxy, one request top to bottom; each step lives in its own module.

1. :mod:`gateway.request`: read the body, resolve the model, rewrite what must change.
2. :mod:`gateway.access`: the key may use the model, the request is within the caps and the key
   within its rate limits; a refused request never reaches a worker.
3. :mod:`gateway.send`: pick a replica (:mod:`gateway.routing`, pure) and send, failing over until an
   answer opens (status and first chunk), all within the total upstream deadline.
4. :mod:`gateway.relay`: pass the answer back, then account for it (:mod:`gateway.accounting`).

Until an answer opens, a client that leaves cancels the upstream request
(:func:`common.streaming.cancel_on_disconnect`): without that, a non-streamed request whose client
gave up would still run to the end on the worker, since nothing is sent back before it answers.
"""

from __future__ import annotations

from fastapi import Request

from common.errors import APIError
from common.streaming import ClosingResponse, ClosingStreamingResponse, cancel_on_disconnect
from gateway.access import admit
from gateway.accounting import Exchange
from gateway.deps import GatewayState
from gateway.relay import respond
from gateway.request import read_request
from gateway.routing import Endpoint
from gateway.send import send


async def forward(state: GatewayState, request: Request, endpoint: Endpoint,
                  default: str | None) -> ClosingStreamingResponse | ClosingResponse:
    """Answer one OpenAI request by proxying it; typed errors carry the request id back."""
    exchange = Exchange.begin(state, request, endpoint)
    try:
        exchange.request = asked = await read_request(state, request, endpoint, default, exchange.request_id)
        admission = await admit(state, exchange.principal, asked)
        exchange.grant = admission.grant
        opened = await cancel_on_disconnect(request, send(state, asked, admission.models))
    except APIError as exc:
        exchange.refused(exc)
        raise
    return respond(exchange, opened)
