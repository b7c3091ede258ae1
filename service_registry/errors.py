"""Registry-specific errors: typed subclasses of the one table in ``common.errors``."""

from __future__ import annotations

from common.errors import APIError, NotFoundError


class ServiceNotFoundError(NotFoundError):
    code = "service_not_found"


class ConflictError(APIError):
    """The request is valid but clashes with what the registry holds (e.g. deleting a static upstream)."""

    status, type, code = 409, "invalid_request_error", "conflict"
