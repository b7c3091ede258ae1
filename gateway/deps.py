"""The resources one gateway app owns, and typed dependencies that hand them to routes.

Everything lives on ``app.state.gateway`` for the lifetime of the lifespan: no module globals, so
two gateways in one process (as in tests) never share a client, a snapshot or a metric.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import httpx
from fastapi import Depends
from pydantic import SecretStr

from common.service import state_getter
from gateway.circuit import CircuitBoard
from gateway.keys import KeyStore
from gateway.limits import Limiter, RateLimits
from gateway.metrics import GatewayMetrics, InFlight
from gateway.routing import DEFAULT_RULES, Rules
from gateway.settings import GatewaySettings
from gateway.shared_state import SharedState
from gateway.upstreams import Upstreams
from gateway.usage import UsageLog


@dataclass
class GatewayState:
    settings: GatewaySettings
    client: httpx.AsyncClient
    upstreams: Upstreams
    metrics: GatewayMetrics
    keys: KeyStore
    circuits: CircuitBoard = field(default_factory=lambda: CircuitBoard(threshold=3, cooldown_s=5.0))
    rules: Rules = DEFAULT_RULES
    # External upstream id -> API key; sent upstream as a bearer token, never logged or answered.
    api_keys: dict[str, SecretStr] = field(default_factory=dict, repr=False)
    # What every call to a worker of ours (and to the registry) carries: the service token, auth on.
    service_headers: dict[str, str] = field(default_factory=dict, repr=False)
    limits: RateLimits = field(default_factory=Limiter)
    usage: UsageLog = field(default_factory=lambda: UsageLog(Path("-"), max_bytes=0, backup_count=1, enabled=False))
    # Limits, keys and usage shared with other gateway replicas (GATEWAY_REDIS_URL); None: this process only.
    shared: SharedState | None = None
    in_flight: InFlight = field(default_factory=InFlight)
    rng: random.Random = field(default_factory=random.Random)
    turns: itertools.count[int] = field(default_factory=itertools.count)  # round-robin's counter


get_state = state_getter("gateway", GatewayState, "gateway")
StateDep = Annotated[GatewayState, Depends(get_state)]
