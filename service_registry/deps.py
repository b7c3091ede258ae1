"""The resources one service registry app owns, and the typed dependency that hands them to routes.

Everything lives on ``app.state.service_registry`` for the lifetime of the lifespan: no module globals,
so two registries in one process (as in tests) never share state, a client or a metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from common.service import state_getter
from service_registry.metrics import ServiceRegistryMetrics
from service_registry.poller import Poller
from service_registry.registry import Registry
from service_registry.settings import RegistrySettings


@dataclass
class ServiceRegistryState:
    settings: RegistrySettings
    registry: Registry
    poller: Poller
    metrics: ServiceRegistryMetrics


get_state = state_getter("service_registry", ServiceRegistryState, "service registry")
StateDep = Annotated[ServiceRegistryState, Depends(get_state)]
