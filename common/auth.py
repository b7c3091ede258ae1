"""Who may call what: one bearer-key check shared by every service.

Three kinds of caller, each a :class:`Role`:

- ``admin``: ``MODEL_SERVICE_ADMIN_KEY``. Everything on every service: key management and usage on the
  gateway, the model registry's write routes, the service registry's register routes.
- ``service``: ``MODEL_SERVICE_SERVICE_TOKEN``. What the services send each other: workers registering
  and heartbeating, the gateway calling workers, the registry polling them, Prometheus scraping.
- ``user``: a gateway API key made by an admin (``model-service keys create``). OpenAI routes only,
  limited to the key's models and rates. The gateway's key store answers :class:`UserKeys` lookups.

Off unless ``MODEL_SERVICE_AUTH=true``: the embedded one-machine stack listens on loopback, and the
compose stacks turn it on in ``.env``. When it is on, the admin key and the service token must both be
set, long enough, and not a published placeholder, or the service refuses to start.

Secrets are compared as SHA-256 digests with :func:`hmac.compare_digest`; a presented key is never
logged, echoed or kept, and user keys are stored as digests only. Random keys of 32 bytes need no slow
hash: there is no dictionary to guess from.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from fastapi import FastAPI, Request
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.requests import Request as StarletteRequest
from starlette.types import ASGIApp, Receive, Scope, Send

from common.errors import AuthenticationError, PermissionDeniedError, error_response
from common.settings import refuse_placeholder_secrets

# Generated keys start with this, so a leaked one is recognisable (secret scanners, logs).
KEY_PREFIX = "msp-"
MIN_SECRET_LENGTH = 16


class Role(StrEnum):
    ADMIN = "admin"
    SERVICE = "service"
    USER = "user"


@dataclass(frozen=True)
class Principal:
    """The caller of one request, as the check found it (``request.state.principal``)."""

    key_id: str
    role: Role
    name: str = ""
    # None: every model. Otherwise the model ids this key may use.
    models: frozenset[str] | None = None
    # Per-minute limits for a user key; None: unlimited.
    rpm: int | None = None
    tpm: int | None = None

    def allows_model(self, model: str) -> bool:
        return self.models is None or model in self.models


# Auth off: one caller who may do everything. Its id is what the usage log records.
ANONYMOUS = Principal(key_id="-", role=Role.ADMIN, name="anonymous")


def digest(secret: str) -> str:
    """The stored and compared form of a key: hex SHA-256."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    """A fresh API key: the prefix and 32 random bytes, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


class UserKeys(Protocol):
    """The gateway's key store, as the check sees it."""

    def lookup(self, key_digest: str) -> Principal | None:
        """The live (not revoked) key with this digest, or None."""
        ...


class AuthSettings(BaseSettings):
    """``MODEL_SERVICE_AUTH``, ``MODEL_SERVICE_ADMIN_KEY``, ``MODEL_SERVICE_SERVICE_TOKEN``: one set for
    every service, so one ``.env`` serves the whole stack."""

    # hide_input_in_errors: a start-up error must name the variable, never print the secrets themselves
    # (pydantic otherwise quotes the input, e.g. the tail of the admin key when the token is missing).
    model_config = SettingsConfigDict(env_prefix="MODEL_SERVICE_", env_file=".env", env_file_encoding="utf-8",
                                      extra="ignore", env_ignore_empty=True, populate_by_name=True,
                                      hide_input_in_errors=True)

    auth: bool = False
    admin_key: SecretStr | None = Field(default=None, repr=False)
    service_token: SecretStr | None = Field(default=None, repr=False)

    @model_validator(mode="after")
    def _complete_when_on(self) -> AuthSettings:
        if not self.auth:
            return self
        for name, value in (("MODEL_SERVICE_ADMIN_KEY", self.admin_key),
                            ("MODEL_SERVICE_SERVICE_TOKEN", self.service_token)):
            if value is None:
                raise ValueError(f"MODEL_SERVICE_AUTH is on but {name} is not set")
            if len(value.get_secret_value()) < MIN_SECRET_LENGTH:
                raise ValueError(f"{name} must be at least {MIN_SECRET_LENGTH} characters long")
        # One value for both would make every service's token an admin key (the admin check wins).
        if self.admin_key.get_secret_value() == self.service_token.get_secret_value():  # type: ignore[union-attr]
            raise ValueError("MODEL_SERVICE_ADMIN_KEY and MODEL_SERVICE_SERVICE_TOKEN must differ: every "
                             "service holds the token, and only admins may hold the admin key")
        refuse_placeholder_secrets({
            "MODEL_SERVICE_ADMIN_KEY": self.admin_key.get_secret_value() if self.admin_key else None,
            "MODEL_SERVICE_SERVICE_TOKEN": self.service_token.get_secret_value() if self.service_token else None,
        })
        return self

    def outgoing_headers(self) -> dict[str, str]:
        """What one service sends another: the service token as a bearer, when auth is on."""
        if not self.auth or self.service_token is None:
            return {}
        return {"authorization": f"Bearer {self.service_token.get_secret_value()}"}


class Authenticator:
    """Turns a presented bearer token into a :class:`Principal`, or a 401."""

    def __init__(self, settings: AuthSettings | None = None, user_keys: UserKeys | None = None) -> None:
        settings = settings or AuthSettings()
        self.enabled = settings.auth
        self.settings = settings
        self.user_keys = user_keys
        self._admin = digest(settings.admin_key.get_secret_value()) if settings.admin_key else None
        self._service = digest(settings.service_token.get_secret_value()) if settings.service_token else None

    def authenticate(self, token: str | None) -> Principal:
        if not self.enabled:
            return ANONYMOUS
        if not token:
            raise AuthenticationError(
                "You didn't provide an API key. Send it in the Authorization header as 'Bearer YOUR_KEY'.",
                code="missing_api_key", headers={"WWW-Authenticate": "Bearer"})
        presented = digest(token)
        # Both built-in secrets are always compared, so timing does not tell which one nearly matched.
        is_admin = self._admin is not None and hmac.compare_digest(presented, self._admin)
        is_service = self._service is not None and hmac.compare_digest(presented, self._service)
        if is_admin:
            return Principal(key_id="admin", role=Role.ADMIN, name="admin")
        if is_service:
            return Principal(key_id="service", role=Role.SERVICE, name="service")
        if self.user_keys is not None and (found := self.user_keys.lookup(presented)) is not None:
            return found
        raise AuthenticationError("Incorrect API key provided.", headers={"WWW-Authenticate": "Bearer"})


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header (the scheme is case-insensitive)."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def require(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency admitting the given roles (admin always); it leaves ``request.state.principal``.

    Use it on a router: ``app.include_router(router, dependencies=[Depends(require(Role.SERVICE))])``.
    ``async`` so FastAPI does not hop to the thread pool for it.
    """
    allowed = frozenset(roles) | {Role.ADMIN}

    async def check(request: Request) -> Principal:
        principal = getattr(request.state, "principal", None)  # the gate already authenticated it
        if principal is None:
            authenticator: Authenticator = request.app.state.authenticator
            principal = authenticator.authenticate(bearer_token(request))
        if principal.role not in allowed:
            raise PermissionDeniedError(
                f"This key may not use {request.url.path}; it needs a {' or '.join(sorted(allowed))} key.")
        request.state.principal = principal
        return principal

    return check


# Paths every service answers without a key: health checks (load balancers, container engines) and
# FastAPI's own API docs with their locally served scripts and styles (``DOCS_ASSETS``, a prefix).
OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
DOCS_ASSETS = "/docs/assets"


class AuthGate:
    """Pure ASGI: with keys on, a request without a valid key gets its 401 before anything reads the
    body; FastAPI would otherwise parse (and answer 400 for) a JSON body before a route's key check.

    It only authenticates; which role may use which route stays with :func:`require` on the routers,
    which reuses the principal left in the request's state.
    """

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.authenticator.enabled or _is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            principal = self.authenticator.authenticate(bearer_token(StarletteRequest(scope)))
        except AuthenticationError as exc:
            await error_response(exc)(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(DOCS_ASSETS + "/")


def install_auth(app: FastAPI, authenticator: Authenticator, *, gate: bool = True) -> None:
    """The authenticator where :func:`require` finds it (``app.state.authenticator``) and, unless
    ``gate`` is off, the :class:`AuthGate` in front of every route."""
    app.state.authenticator = authenticator
    if gate:
        app.add_middleware(AuthGate, authenticator=authenticator)


def principal_of(request: Request) -> Principal:
    """The checked caller of this request.

    Fails closed: with auth on, a route that forgot its check gets a 401 here rather than the
    all-powerful :data:`ANONYMOUS`; with auth off, the caller is :data:`ANONYMOUS`.
    """
    found = getattr(request.state, "principal", None)
    if found is not None:
        return found
    authenticator: Authenticator | None = getattr(request.app.state, "authenticator", None)
    if authenticator is not None and authenticator.enabled:
        raise AuthenticationError("This route needs an API key.", headers={"WWW-Authenticate": "Bearer"})
    return ANONYMOUS
