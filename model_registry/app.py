"""Model registry application factory: ``uvicorn --factory model_registry.app:create_app --port 8090``.

The lifespan owns the storage client and the job runner: it checks the store (creating the bucket,
refusing wrong credentials) before serving, resumes interrupted jobs, and closes both in ``finally``.

With ``MODEL_SERVICE_AUTH=true``: ``/health`` stays open, reads (models, revisions, files, jobs,
metrics) take the service token, and everything that changes the store takes the admin key only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from common.auth import Authenticator, AuthSettings, Role, require
from common.service import metrics_router, service_app
from model_registry.catalog import Catalog
from model_registry.deps import ModelRegistryState
from model_registry.jobs import JobRunner
from model_registry.metrics import ModelRegistryMetrics
from model_registry.routes import jobs, models, ops
from model_registry.settings import ModelRegistrySettings
from model_registry.sources.hf import HubConfig
from model_registry.storage import open_storage

log = logging.getLogger(__name__)


def hub_config(settings: ModelRegistrySettings) -> HubConfig:
    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    return HubConfig(endpoint=settings.hf_endpoint, token=token)


def create_app(settings: ModelRegistrySettings | None = None, auth: AuthSettings | None = None) -> FastAPI:
    """``auth``: the API-key settings (default: ``MODEL_SERVICE_AUTH`` and friends from the environment)."""
    settings = settings or ModelRegistrySettings()
    auth = auth or AuthSettings()
    metrics = ModelRegistryMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = open_storage(settings)
        try:
            await asyncio.to_thread(store.check)
            log.info("model registry store: %s", store.describe())
            catalog = Catalog(store)
            runner = JobRunner(catalog, hub_config(settings), max_concurrent=settings.max_concurrent_jobs,
                               tmp_dir=settings.tmp_dir, resume=settings.resume_jobs)
            await runner.start()
            metrics.bind(catalog, runner)
            app.state.model_registry = ModelRegistryState(settings=settings, store=store, catalog=catalog, jobs=runner,
                                               metrics=metrics)
            try:
                yield
            finally:
                app.state.model_registry = None
                await runner.stop()
        finally:
            store.close()

    app = service_app("Model Registry", settings=settings, authenticator=Authenticator(auth), lifespan=lifespan,
                      observe_request=metrics.requests.observe)
    app.include_router(ops.health_router)
    reader = [Depends(require(Role.SERVICE))]
    app.include_router(models.router, dependencies=reader)
    app.include_router(models.admin_router, dependencies=[Depends(require(Role.ADMIN))])
    app.include_router(jobs.router, dependencies=reader)
    app.include_router(metrics_router(metrics.registry), dependencies=reader)
    return app
