"""The resources one model registry app owns, and the typed dependency that hands them to routes.

Everything lives on ``app.state.model_registry`` for the lifetime of the lifespan: no module globals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from common.service import state_getter
from model_registry.catalog import Catalog
from model_registry.jobs import JobRunner
from model_registry.metrics import ModelRegistryMetrics
from model_registry.settings import ModelRegistrySettings
from model_registry.storage import Storage


@dataclass
class ModelRegistryState:
    settings: ModelRegistrySettings
    store: Storage
    catalog: Catalog
    jobs: JobRunner
    metrics: ModelRegistryMetrics


get_state = state_getter("model_registry", ModelRegistryState, "model registry")
StateDep = Annotated[ModelRegistryState, Depends(get_state)]
