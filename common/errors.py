"""One error table for every service.

Handlers raise typed errors; this module maps them to an HTTP status and OpenAI's error shape
``{"error": {"message", "type", "param", "code"}}``. Nothing matches on message text, and no stack
trace ever reaches a client.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request, params
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

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


class UnsupportedMediaTypeError(APIError):
    """The body's ``Content-Type`` is not one the route reads (JSON for JSON routes, a form for uploads)."""

    status, type, code = 415, "invalid_request_error", "unsupported_media_type"


class OverloadedError(APIError):
    """The queue is full: come back later (429 with Retry-After)."""

    status, type, code = 429, "rate_limit_error", "overloaded"

    def __init__(self, message: str, *, retry_after: int = 1, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.headers.setdefault("Retry-After", str(retry_after))


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


# Labels pydantic puts in an error's location for the member of a union it tried ("str", "list[str]",
# "function-after[...]"): not field names, so a param stops before them.
_TYPE_LABELS = frozenset({"str", "int", "float", "bool", "bytes", "none", "list", "dict", "set", "tuple"})


def _is_label(part: Any) -> bool:
    return isinstance(part, str) and (not part.isidentifier() or part in _TYPE_LABELS)


_SOURCES = frozenset({"body", "query", "path", "header"})


def _param_from_loc(loc: tuple[Any, ...], *, through_unions: bool = True) -> str | None:
    """``messages[0].content`` from pydantic's location; union-member labels are left out, or, without
    ``through_unions``, end the param (the field whose union no member matched)."""
    # FastAPI puts where the value came from first; only there is it not a field (rerank has a "query").
    parts = list(loc[1:] if loc and loc[0] in _SOURCES and (len(loc) > 1 or loc[0] == "body") else loc)
    if not parts:
        return None
    out = str(parts[0])
    for p in parts[1:]:
        if _is_label(p):
            if not through_unions:
                break
            continue
        out += f"[{p}]" if isinstance(p, int) or p.isdigit() else f".{p}"
    return out


def _most_telling(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """The first problem; when a union field failed, the member's problem that went deepest (a list of
    parts with one bad part says more than "not a string")."""
    first = errors[0]
    field = _param_from_loc(tuple(first.get("loc", ())), through_unions=False)
    same = [e for e in errors if _param_from_loc(tuple(e.get("loc", ())), through_unions=False) == field]
    return max(same, key=lambda e: len(e.get("loc", ())))


def _media_type(request: Request | None) -> str:
    if request is None:
        return ""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _reads_form(request: Request | None) -> bool:
    """Whether the matched route takes a form (uploads), by FastAPI's own field description of its body."""
    field = getattr(request.scope.get("route"), "body_field", None) if request is not None else None
    return isinstance(getattr(field, "field_info", None), params.Form)


def media_type_error(exc: RequestValidationError, request: Request | None) -> UnsupportedMediaTypeError | None:
    """415 when the body was not read because of its ``Content-Type``, rather than a puzzling 400.

    FastAPI reads a body as JSON only when it is declared ``application/json`` (or ``+json``), and as a
    form only when declared multipart or urlencoded; otherwise the bytes reach validation unparsed,
    or the form comes back empty."""
    media = _media_type(request)
    if _reads_form(request):
        if media in ("multipart/form-data", "application/x-www-form-urlencoded"):
            return None
        return UnsupportedMediaTypeError(
            f"This endpoint takes a multipart/form-data body, not {media or 'a body without a Content-Type'}.",
            code="unsupported_media_type")
    if isinstance(exc.body, bytes | bytearray):
        return UnsupportedMediaTypeError(
            f"This endpoint takes a JSON body: send it with 'Content-Type: application/json' "
            f"(got {media or 'no Content-Type'}).", code="unsupported_media_type")
    return None


def validation_error(exc: RequestValidationError, request: Request | None = None) -> APIError:
    """Turn pydantic's list of problems into one readable 400 that names the first bad param."""
    errors = exc.errors()
    if not errors:
        return InvalidRequestError("Invalid request body.")
    wrong_media = media_type_error(exc, request)
    if wrong_media is not None:
        return wrong_media
    first = _most_telling(errors)
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
    if param is None and loc[:1] == ("body",) and first.get("type") in _NOT_AN_OBJECT:
        return InvalidRequestError(f"The request body must be a JSON object, not {_json_kind(exc.body)}.",
                                   code="invalid_json")
    msg = first.get("msg", "invalid value")
    if first.get("type") == "unsupported_parameter":  # common.protocol.refuse_unless: known, not done
        return InvalidRequestError(msg, param=param, code="unsupported_parameter")
    where = f"'{param}'" if param else "the request body"
    extra = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return InvalidRequestError(f"Invalid value for {where}: {msg}{extra}.", param=param, code="invalid_value")


# pydantic's error types for "this is not a dict / model" at the top of a body.
_NOT_AN_OBJECT = frozenset({"model_attributes_type", "model_type", "dict_type"})


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    return "a number" if isinstance(value, int | float) else "that"


def body_parse_error(exc: StarletteHTTPException) -> InvalidRequestError | None:
    """FastAPI's own "error parsing the body" 400 (and Starlette's for a broken form), told apart by the
    exception that caused it."""
    if exc.status_code != 400:
        return None
    if isinstance(exc.__context__, MultiPartException):  # Starlette re-raises it while handling it
        return InvalidRequestError(f"The multipart/form-data body could not be read ({str(exc.detail).rstrip('.')}).",
                                   code="invalid_multipart")
    cause = exc.__cause__
    if cause is None:
        return None
    if isinstance(cause, UnicodeDecodeError):
        return InvalidRequestError(f"The request body is not valid UTF-8 ({cause.reason} at byte {cause.start}). "
                                   "The body must be JSON encoded as UTF-8.", code="invalid_json")
    if isinstance(cause, RecursionError):
        return InvalidRequestError("The JSON body of your request is nested too deeply to be read.",
                                   code="invalid_json")
    if isinstance(cause, ValueError):
        return InvalidRequestError(f"We could not parse the JSON body of your request ({cause}). "
                                   "The body must be valid JSON.", code="invalid_json")
    return None


def install_error_handlers(app: FastAPI) -> None:
    """Register the one table: typed errors, validation errors, Starlette's own, and the catch-all."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc, request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        parse_error = body_parse_error(exc)
        if parse_error is not None:
            return error_response(parse_error)
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
