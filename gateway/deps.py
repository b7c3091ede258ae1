"""The resources one gateway app owns, and typed dependencies that hand them to routes.

Everything lives on ``app.state.gateway`` for the lifetime of the lifespan: no module globals, so
two gateways in one process (as in tests) never share a client, a snapshot or a metric.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Annotated

import httpx
from fastapi import Depends, Request

from common.errors import ServiceUnavailableError
from gateway.metrics import GatewayMetrics, InFlight
from gateway.settings import GatewaySettings
from gateway.upstreams import UpstreamProber


@dataclass
class GatewayState:
    settings: GatewaySettings
    client: httpx.AsyncClient
    upstreams: UpstreamProber
    metrics: GatewayMetrics
    in_flight: InFlight = field(default_factory=InFlight)
    rng: random.Random = field(default_factory=random.Random)


def get_state(request: Request) -> GatewayState:
    state = getattr(request.app.state, "gateway", None)
    if state is None:  # only when the app is driven without its lifespan
        raise ServiceUnavailableError("The gateway is starting up; try again in a moment.")
    return state


StateDep = Annotated[GatewayState, Depends(get_state)]
