"""The worker's run-time state: settings, engine (once loaded), admission and metrics.

One instance per app, on ``app.state.worker``; the lifespan starts the load and closes the engine.
Start-up is one story, in this order: the settings are built once (flags and environment, by the
``worker`` command or ``create_app``) and passed down; the server answers ``/health`` (503,
``loading``) from the first second while a load thread gets the model files (``model_files``:
fetched and verified when they come from the store, and the libraries set offline), builds the
engine the settings name (``engines.ENGINES``) and loads it; then ``/health`` turns ``ok`` and the
routes serve. A failure anywhere on the way is reported by ``/health`` instead of ending the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Literal

import httpx

from common.errors import ServiceUnavailableError
from common.records import WorkerHealth
from model_service.admission import Admission
from model_service.engines import build_engine
from model_service.engines.base import Engine, EngineInfo
from model_service.metrics import WorkerMetrics
from model_service.model_files import prepare_model_files
from model_service.settings import WorkerSettings
from service_registry.client import Membership

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, settings: WorkerSettings, engine: Engine | None = None) -> None:
        self.settings = settings
        # An engine handed in already loaded (tests share one real model) belongs to the caller.
        self._given = engine
        self.metrics = WorkerMetrics(settings.model_name)
        self.admission = Admission(settings.engine_concurrency(), settings.max_queue, settings.retry_after_s)
        self.metrics.watch_admission(lambda: self.admission.running, lambda: self.admission.waiting)
        self.engine: Engine | None = None
        self.status: Literal["loading", "ok", "error"] = "loading"
        self.error: str | None = None
        self._load_task: asyncio.Task[None] | None = None
        # Fetches remote images for a multimodal worker, only where the site allows them.
        self.http: httpx.AsyncClient | None = None
        # Set by the lifespan while registered; a drain (model_service/drain.py) withdraws it.
        self.membership: Membership | None = None
        self.draining = False

    async def start(self) -> None:
        if self.settings.model_type == "multimodal" and self.settings.allow_remote_images:
            timeout = self.settings.image_fetch_timeout_s
            self.http = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
                                          follow_redirects=True)
        if self._given is not None:
            self._given.batch_observer = self.metrics.batch_size.observe
            self.engine, self.status = self._given, "ok"
            self.metrics.set_loaded(True)
            return
        self._load_task = asyncio.create_task(self._load(), name="engine-load")

    async def stop(self) -> None:
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._load_task
        if self.http is not None:
            await self.http.aclose()
            self.http = None
        engine, self.engine = self.engine, None
        self.metrics.set_loaded(False)
        if engine is not None and engine is not self._given:
            await _close(engine)

    async def _load(self) -> None:
        engine = None
        try:
            engine = await asyncio.to_thread(self._build_and_load)
            await engine.serve()  # a supervised-server engine's child, started on this loop
        except Exception as exc:
            log.exception("loading model %s failed", self.settings.model_name)
            self.status, self.error = "error", f"{type(exc).__name__}: {exc}"
            if engine is not None:
                await _close(engine)
            return
        except asyncio.CancelledError:
            if engine is not None:
                await _close(engine)
            raise
        self.engine, self.status = engine, "ok"
        self.metrics.set_loaded(True)
        log.info("model %s ready (%s)", self.settings.model_name, engine.info())

    def _build_and_load(self) -> Engine:
        """Files, engine, load (the load thread's part of start-up)."""
        settings = prepare_model_files(self.settings)
        engine = build_engine(settings)
        engine.batch_observer = self.metrics.batch_size.observe
        try:
            engine.load()
        except BaseException:
            engine.close()
            raise
        return engine

    def info(self) -> EngineInfo | None:
        return self.engine.info() if self.engine is not None else None

    def health(self) -> WorkerHealth:
        info = self.info()
        return WorkerHealth(
            status=self.status, model=self.settings.model_name, type=self.settings.model_type,
            engine=info.engine if info else self.settings.engine, device=info.device if info else None,
            dtype=info.dtype if info else None, max_model_len=info.max_model_len if info else None,
            detail=self.error,
        )

    def ready_engine(self) -> Engine:
        """The loaded engine, or a 503 that says whether to wait (loading, its server restarting) or
        give up (failed), or to go elsewhere (draining: the gateway fails over before the first byte)."""
        if self.draining:
            raise ServiceUnavailableError(f"This replica of '{self.settings.model_name}' is draining before it "
                                          "stops; another replica serves.", code="draining")
        if self.engine is not None:
            if (why := self.engine.unavailable()) is not None:
                raise ServiceUnavailableError(f"Model '{self.settings.model_name}' is unavailable: {why}",
                                              code="engine_unavailable",
                                              headers={"Retry-After": str(max(self.settings.retry_after_s, 1))})
            return self.engine
        if self.status == "error":
            raise ServiceUnavailableError(f"Model '{self.settings.model_name}' failed to load: {self.error}",
                                          code="model_load_failed")
        raise ServiceUnavailableError(f"Model '{self.settings.model_name}' is still loading; retry shortly.",
                                      code="model_loading",
                                      headers={"Retry-After": str(max(self.settings.retry_after_s, 1))})


async def _close(engine: Engine) -> None:
    """Stop an engine: its async part (a child server) on this loop, then the blocking part."""
    try:
        await engine.aclose()
    finally:
        await asyncio.to_thread(engine.close)
