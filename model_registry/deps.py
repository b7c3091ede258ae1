"""The resources one registry app owns, and the typed dependency that hands them to routes.

Everything lives on ``app.state.registry`` for the lifetime of the lifespan: no module globals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from common.errors import ServiceUnavailableError
from model_registry.catalog import Catalog
from model_registry.jobs import JobRunner
from model_registry.metrics import RegistryMetrics
from model_registry.settings import ModelRegistrySettings
from model_registry.storage import Storage


@dataclass
class RegistryState:
    settings: ModelRegistrySettings
    store: Storage
    catalog: Catalog
    jobs: JobRunner
    metrics: RegistryMetrics


def get_state(request: Request) -> RegistryState:
    state = getattr(request.app.state, "registry", None)
    if state is None:  # only when the app is driven without its lifespan
        raise ServiceUnavailableError("The model registry is starting up; try again in a moment.")
    return state


StateDep = Annotated[RegistryState, Depends(get_state)]
