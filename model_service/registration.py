"""A worker's membership in the service registry, for the lifespan to wrap the app's life in.

With ``WORKER_REGISTRY_URL`` set the worker registers itself (id, advertised URL, model, type, GPU
indices, capacity) and heartbeats in the background through :class:`RegistryClient.keep_registered`,
which never raises into the worker: a registry that is down only delays the registration, it never
blocks start-up or stops serving. A clean shutdown deregisters; a crash lets the entry expire.

The worker registers while its model is still loading; the registry's own ``/health`` probe marks it
loading until the model is ready, so the gateway never routes to it early.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from model_service.settings import WorkerSettings
from service_registry.client import Membership, RegistryClient
from service_registry.schemas import Registration

log = logging.getLogger(__name__)

# Addresses a server binds to that nobody can connect to: advertise the host name instead.
_BIND_ALL = {"0.0.0.0", "::", ""}


def advertised_url(settings: WorkerSettings) -> str:
    """Where others reach this worker: ``advertise_url``, else ``http://{host}:{port}``."""
    if settings.advertise_url:
        return settings.advertise_url.rstrip("/")
    host = socket.gethostname() if settings.host in _BIND_ALL else settings.host
    if ":" in host:  # a bare IPv6 address
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def worker_id(settings: WorkerSettings, url: str) -> str:
    """A stable id, so a restarted worker is the same service: ``{model}@{host}:{port}``."""
    if settings.worker_id:
        return settings.worker_id
    netloc = urlsplit(url).netloc
    return re.sub(r"[^A-Za-z0-9._:@/-]", "-", f"{settings.model_name}@{netloc}")[:128]


def registration_for(settings: WorkerSettings) -> Registration:
    """What this worker tells the registry; capacity = requests it accepts before answering 429."""
    url = advertised_url(settings)
    return Registration(
        id=worker_id(settings, url), url=url, models=[settings.model_name], type=settings.model_type,
        gpu_indices=list(settings.gpu_indices), capacity=settings.engine_concurrency() + settings.max_queue,
        heartbeat_interval=settings.heartbeat_interval_s,
    )


@asynccontextmanager
async def registered(settings: WorkerSettings, headers: Mapping[str, str] | None = None
                     ) -> AsyncIterator[Membership | None]:
    """Stay registered while the block runs; yields None (and does nothing) without a registry URL.

    ``headers`` go with every registry call (the service token when auth is on). A registration that
    cannot even be built (a bad advertised URL) is logged and skipped, and a refused token is logged
    and retried slowly: either way the worker still serves, it is just not discoverable, which the
    log says plainly.
    """
    if not settings.registry_url:
        yield None
        return
    try:
        registration = registration_for(settings)
    except ValueError as exc:
        log.error("not registering with %s: %s", settings.registry_url, exc)
        yield None
        return
    async with (RegistryClient(settings.registry_url, headers=headers) as client,
                client.keep_registered(registration) as membership):
        log.info("registering %s (%s) with %s", registration.id, registration.url, settings.registry_url)
        yield membership
