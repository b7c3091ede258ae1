"""Graceful drain: how a worker leaves a running cluster without failing a request.

A rolling change (``model-service apply``, a revision rollout, ``docker compose up`` with a changed
file, a Kubernetes rollout) stops workers with SIGTERM. Stopping at once would fail the requests in
flight and send the gateway's next picks to a closed port until its registry view catches up. So
the first SIGTERM drains instead, in this order:

1. deregister from the service registry (the gateways following it stop picking this worker);
2. answer every new request with 503 ``draining`` (the gateway fails over before the first byte);
3. wait until no request is running or queued, and at least ``drain_linger_s`` (a gateway's next
   registry read), at most ``drain_timeout_s``;
4. then uvicorn's own shutdown (which also waits for any request still open) and the lifespan.

A second SIGTERM or a Ctrl-C stops at once, as before.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

if TYPE_CHECKING:
    from fastapi import FastAPI

    from model_service.worker import Worker

log = logging.getLogger(__name__)
POLL_S = 0.1


async def drain(worker: Worker) -> None:
    """Steps 1 to 3 above; returns when the worker may shut down."""
    settings = worker.settings
    started = time.monotonic()
    worker.draining = True
    if worker.membership is not None:
        await worker.membership.withdraw()
    log.info("draining: deregistered; refusing new requests, waiting for %d running and %d queued",
             worker.admission.running, worker.admission.waiting)
    while True:
        elapsed = time.monotonic() - started
        idle = worker.admission.running == 0 and worker.admission.waiting == 0
        if (idle and elapsed >= settings.drain_linger_s) or elapsed >= settings.drain_timeout_s:
            break
        await asyncio.sleep(POLL_S)
    if not idle:
        log.warning("drain timed out after %.0f s with %d request(s) still running",
                    settings.drain_timeout_s, worker.admission.running + worker.admission.waiting)
    log.info("drained in %.1f s; shutting down", time.monotonic() - started)


class DrainingServer(uvicorn.Server):
    """uvicorn's server with SIGTERM meaning "drain, then stop" for a worker app."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app
        self._drain_requested = False
        self._drain_task: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        worker: Worker | None = getattr(self._app.state, "worker", None)
        if sig != signal.SIGTERM or self._drain_requested or self.should_exit or worker is None:
            super().handle_exit(sig, frame)  # a second signal, Ctrl-C, or nothing to drain: stop now
            return
        self._drain_requested = True
        # A signal handler runs between two steps of the loop's own thread: hand the task to the loop.
        asyncio.get_event_loop().call_soon_threadsafe(self._start_drain, worker)

    def _start_drain(self, worker: Worker) -> None:
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(self._drain_then_exit(worker), name="drain")

    async def _drain_then_exit(self, worker: Worker) -> None:
        try:
            await drain(worker)
        finally:
            self.should_exit = True
