"""A small async client of the service registry, for workers (register + heartbeat) and the gateway
(read the snapshot). Plain httpx and pydantic: no FastAPI, so any process can use it.

A worker's lifespan::

    reg = Registration(id="llm-primary", url="http://10.0.0.7:8000", models=["qwen"], type="llm",
                       heartbeat_interval=5)
    async with RegistryClient("http://registry:8070") as registry, registry.keep_registered(reg):
        yield  # registered in the background; heartbeats every 5 s; deregistered on clean exit

``keep_registered`` never raises into the worker: while the registry is down it retries with
exponential backoff, and when a heartbeat answers 404 (the registry restarted and forgot) it
registers again under the same id. A refused key (401/403) is logged as a configuration error and
retried slowly, since only a restart with the right token fixes it.

With auth on, pass the service token: ``RegistryClient(url, headers=auth.outgoing_headers())``. The
headers go on every call this client makes, and only on those.

The gateway::

    snapshot: ServiceSnapshot = await registry.services()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
from pydantic import ValidationError

from common.records import ServiceSnapshot
from service_registry.schemas import Registration, RegistrationAnswer

log = logging.getLogger(__name__)


class RegistryUnavailableError(Exception):
    """The registry could not be reached or answered something unexpected; worth retrying."""


class RegistrationRejectedError(RegistryUnavailableError):
    """The registry refused the registration itself (4xx): retrying will not help until config changes."""


class RegistryAuthError(RegistrationRejectedError):
    """The registry refused this caller's key (401/403): the service token does not match the registry's."""


class RegistryClient:
    def __init__(self, base_url: str, *, timeout_s: float = 3.0, client: httpx.AsyncClient | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        """``headers``: sent with every call (the service token when auth is on); a shared ``client``'s
        own default headers are left alone, so the token never leaks into its other calls."""
        self.base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._headers = dict(headers or {})
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), trust_env=False)

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            resp = await self._client.request(method, f"{self.base_url}{path}", headers=self._headers,
                                              timeout=self._timeout_s, **kw)
        except (httpx.HTTPError, OSError) as exc:
            raise RegistryUnavailableError(f"registry at {self.base_url} unreachable: {exc!r}") from exc
        if resp.status_code in (401, 403):
            raise RegistryAuthError(_auth_refusal(self.base_url, bool(self._headers), resp))
        return resp

    async def register(self, registration: Registration) -> RegistrationAnswer:
        resp = await self._call("POST", "/register", json=registration.model_dump(mode="json", exclude_none=True))
        if resp.status_code in (200, 201):
            return _parse(RegistrationAnswer, resp)
        if 400 <= resp.status_code < 500:
            raise RegistrationRejectedError(f"registry refused the registration: HTTP {resp.status_code} "
                                            f"{_message(resp)}")
        raise RegistryUnavailableError(f"registry answered HTTP {resp.status_code} to a registration")

    async def heartbeat(self, service_id: str) -> bool:
        """True when the registry knows ``service_id``; False when it does not (register again)."""
        resp = await self._call("POST", f"/register/{service_id}/heartbeat")
        if resp.status_code == 404:
            return False
        if resp.status_code != 200:
            raise RegistryUnavailableError(f"registry answered HTTP {resp.status_code} to a heartbeat")
        return True

    async def deregister(self, service_id: str) -> bool:
        """True when the registration was removed; False when the registry did not know it."""
        resp = await self._call("DELETE", f"/register/{service_id}")
        if resp.status_code == 404:
            return False
        if resp.status_code != 200:
            raise RegistryUnavailableError(f"registry answered HTTP {resp.status_code} to a deregistration")
        return True

    async def services(self, *, model: str | None = None, status: str | None = None) -> ServiceSnapshot:
        """The registry's current snapshot (optionally filtered), parsed into the shared record types."""
        params = {k: v for k, v in (("model", model), ("status", status)) if v is not None}
        resp = await self._call("GET", "/services", params=params)
        if resp.status_code != 200:
            raise RegistryUnavailableError(f"registry answered HTTP {resp.status_code} to GET /services")
        return _parse(ServiceSnapshot, resp)

    @contextlib.asynccontextmanager
    async def keep_registered(self, registration: Registration, *, initial_backoff_s: float = 0.5,
                              max_backoff_s: float = 30.0) -> AsyncIterator[Membership]:
        """Stay registered while the block runs (in a background task); deregister when it ends."""
        membership = Membership(self, registration, initial_backoff_s, max_backoff_s)
        task = asyncio.create_task(membership.run(), name="registry-membership")
        try:
            yield membership
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await membership.leave()


class Membership:
    """One worker's registration kept alive: register, heartbeat, re-register, back off when down."""

    DEFAULT_INTERVAL_S = 5.0

    def __init__(self, client: RegistryClient, registration: Registration, initial_backoff_s: float,
                 max_backoff_s: float) -> None:
        self._client = client
        self._registration = registration
        self._initial = initial_backoff_s
        self._max = max_backoff_s
        self.service_id: str | None = None  # set once the registry has accepted the registration
        self.registered = asyncio.Event()  # set while registered (tests and start-up logs can wait on it)
        self.last_error: str | None = None  # why the last step failed; None once a step succeeds
        self.withdrawn = False  # set by withdraw(): no heartbeat or re-registration after it

    @property
    def interval_s(self) -> float:
        return self._registration.heartbeat_interval or self.DEFAULT_INTERVAL_S

    async def run(self) -> None:
        delay = self._initial
        while not self.withdrawn:
            try:
                await self._step()
                delay = self._initial
                self.last_error = None
            except RegistrationRejectedError as exc:
                # Configuration, not weather: say so loudly, then retry slowly (never a tight loop).
                self.last_error = str(exc)
                log.error("%s; retrying in %.0fs", exc, self._max)
                await asyncio.sleep(self._max)
            except RegistryUnavailableError as exc:
                self.last_error = str(exc)
                log.warning("%s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self._max)
            except Exception:  # a bug here must never take the worker down
                log.exception("registry membership step failed")
                await asyncio.sleep(self._max)

    async def _step(self) -> None:
        if self.withdrawn:
            return
        if self.service_id is None:
            answer = await self._client.register(self._registration)
            self.service_id = answer.id
            # Keep the id the registry chose, so a later re-registration is the same service.
            self._registration = self._registration.model_copy(update={"id": answer.id})
            self.registered.set()
            log.info("registered with %s as %s", self._client.base_url, answer.id)
            return
        await asyncio.sleep(self.interval_s)
        if self.withdrawn:
            return
        if not await self._client.heartbeat(self.service_id):
            log.warning("registry forgot %s; registering again", self.service_id)
            self.service_id = None
            self.registered.clear()

    async def withdraw(self) -> None:
        """Deregister now and stay out (a draining worker): unlike :meth:`leave` mid-life, the
        background task does not register again when its next heartbeat finds the entry gone."""
        self.withdrawn = True
        await self.leave()

    async def leave(self) -> None:
        """Deregister on a clean shutdown; a registry that is down just lets the registration expire."""
        if self.service_id is None:
            return
        try:
            async with asyncio.timeout(2.0):
                await self._client.deregister(self.service_id)
        except (RegistryUnavailableError, TimeoutError) as exc:
            log.warning("could not deregister %s (%s); it will expire", self.service_id, exc)
        self.service_id = None
        self.registered.clear()


def _parse(model: Any, resp: httpx.Response) -> Any:
    try:
        return model.model_validate_json(resp.content)
    except ValidationError as exc:
        raise RegistryUnavailableError(f"registry sent a body that does not parse: {exc}") from exc


def _auth_refusal(base_url: str, sent_token: bool, resp: httpx.Response) -> str:
    """Why the registry said no, and what to change; never the token itself."""
    if resp.status_code == 403:
        hint = "the key is valid but may not do this"
    elif sent_token:
        hint = "the service token is wrong: set MODEL_SERVICE_SERVICE_TOKEN to the registry's value"
    else:
        hint = "it needs the service token: set MODEL_SERVICE_AUTH=true and MODEL_SERVICE_SERVICE_TOKEN here too"
    return f"registry at {base_url} refused this caller (HTTP {resp.status_code}: {_message(resp)}); {hint}"


def _message(resp: httpx.Response) -> str:
    try:
        return str(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return resp.text[:200]
