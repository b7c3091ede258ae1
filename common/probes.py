"""What every probe of a worker reads the same way, in the gateway and in the service registry.

A probe never raises: a failure becomes a reason that names the exception, the time it took is kept
in milliseconds, and a body that is not the record asked for is simply no record.
"""

from __future__ import annotations

import time
from typing import TypeVar

import httpx
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def describe(exc: BaseException) -> str:
    """``ConnectError: [Errno 111] ...``, or the bare type when the exception has no text."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def ms_since(started: float) -> float:
    """Milliseconds since ``started`` (a ``time.perf_counter()``), to two decimals."""
    return round((time.perf_counter() - started) * 1000, 2)


def parse_body(model: type[M], resp: httpx.Response) -> M | None:
    """The answer's JSON body as ``model``, or None when it is not one."""
    try:
        return model.model_validate_json(resp.content)
    except ValidationError:
        return None
