"""One error table for every service.

Handlers raise typed errors; this module maps them to an HTTP status and OpenAI's error shape
``{"error": {"message", "type", "param", "code"}}``. Nothing matches on message text, and no stack
trace ever reaches a client.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class APIError(Exception):
    """Base of every error a service answers with on purpose."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


class InvalidRequestError(APIError):
    status, type, code = 400, "invalid_request_error", None


class AuthenticationError(APIError):
    status, type, code = 401, "authentication_error", "invalid_api_key"


class PermissionDeniedError(APIError):
    status, type, code = 403, "permission_error", "permission_denied"


class NotFoundError(APIError):
    status, type, code = 404, "invalid_request_error", "not_found"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


class RequestTimeoutError(APIError):
    """The request body stalled or took too long to arrive; the connection is closed after the answer."""

    status, type, code = 408, "invalid_request_error", "request_timeout"


class PayloadTooLargeError(APIError):
    status, type, code = 413, "invalid_request_error", "payload_too_large"


class OverloadedError(APIError):
    """The queue is full: come back later (429 with Retry-After)."""

    status, type, code = 429, "rate_limit_error", "overloaded"

    def __init__(self, message: str, *, retry_after: int = 1, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.headers.setdefault("Retry-After", str(retry_after))


class UpstreamError(APIError):
    """An upstream answered in a way we cannot pass on (e.g. failed mid-way)."""

    status, type, code = 502, "server_error", "upstream_error"


class ServiceUnavailableError(APIError):
    """No healthy replica, model still loading, or a worker is unreachable."""

    status, type, code = 503, "server_error", "service_unavailable"


class UpstreamTimeoutError(APIError):
    status, type, code = 504, "server_error", "upstream_timeout"


# Status codes that Starlette raises itself (unknown route, wrong method) mapped to OpenAI types.
_HTTP_STATUS_TYPES: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    408: ("invalid_request_error", "request_timeout"),
    413: ("invalid_request_error", "payload_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
    429: ("rate_limit_error", "rate_limited"),
}


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(exc: APIError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers or None)


def sse_error_event(message: str, type_: str = "server_error", code: str | None = None) -> bytes:
    """One OpenAI-style error event for a stream that already started and cannot change its status."""
    return f"data: {json.dumps(error_body(message, type_, None, code))}\n\n".encode()


def _param_from_loc(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out += f"[{p}]" if p.isdigit() else f".{p}"
    return out


def validation_error(exc: RequestValidationError) -> InvalidRequestError:
    """Turn pydantic's list of problems into one readable 400 that names the first bad param."""
    errors = exc.errors()
    if not errors:
        return InvalidRequestError("Invalid request body.")
    first = errors[0]
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx") or {}
        detail = ctx.get("error", "could not be parsed")
        return InvalidRequestError(
            f"We could not parse the JSON body of your request ({detail}). "
            "The body must be valid JSON.",
            code="invalid_json",
        )
    loc = tuple(first.get("loc", ()))
    param = _param_from_loc(loc)
    if first.get("type") == "missing" and param is None:
        return InvalidRequestError("The request body is missing; expected a JSON object.", code="invalid_json")
    msg = first.get("msg", "invalid value")
    where = f"'{param}'" if param else "the request body"
    extra = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return InvalidRequestError(f"Invalid value for {where}: {msg}{extra}.", param=param, code="invalid_value")


def install_error_handlers(app: FastAPI) -> None:
    """Register the one table: typed errors, validation errors, Starlette's own, and the catch-all."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_, code = _HTTP_STATUS_TYPES.get(exc.status_code, ("server_error", None))
        message = exc.detail if isinstance(exc.detail, str) else "Request failed."
        return JSONResponse(
            error_body(message, type_, None, code),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("The server had an internal error while processing your request.", "server_error",
                       None, "internal_error"),
            status_code=500,
        )
