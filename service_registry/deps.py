"""The resources one service registry app owns, and the typed dependency that hands them to routes.

Everything lives on ``app.state.service_registry`` for the lifetime of the lifespan: no module globals,
so two registries in one process (as in tests) never share state, a client or a metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from common.errors import ServiceUnavailableError
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


def get_state(request: Request) -> ServiceRegistryState:
    state = getattr(request.app.state, "service_registry", None)
    if state is None:  # only when the app is driven without its lifespan
        raise ServiceUnavailableError("The service registry is starting up; try again in a moment.")
    return state


StateDep = Annotated[ServiceRegistryState, Depends(get_state)]
