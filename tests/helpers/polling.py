"""Waiting for a condition that has no event to await: one contract for every test.

``eventually`` polls ``check`` (a plain function or one returning an awaitable) until it returns
something truthy and returns that value; after ``within_s`` it raises ``AssertionError`` naming what it
waited for and the last value seen. Loops are bounded in time, and a test asserts an outcome, never a
duration. ``eventually_sync`` is the same for code that runs outside an event loop (process fixtures).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def eventually(check: Callable[[], T | Awaitable[T]], what: str, within_s: float = 10.0,
                     every_s: float = 0.02) -> T:
    """Poll ``check`` until it returns something truthy; return it, or fail naming ``what``.

    The time limit also covers a ``check`` that hangs (an HTTP call to a server that never answers)."""
    last: Any = None
    timeout = asyncio.timeout(within_s)
    try:
        async with timeout:
            while True:
                got = check()
                last = await got if inspect.isawaitable(got) else got
                if last:
                    return last
                await asyncio.sleep(every_s)
    except TimeoutError:
        if not timeout.expired():
            raise
        raise AssertionError(f"timed out after {within_s} s waiting for {what}; last seen: {last!r}") from None


def eventually_sync(check: Callable[[], T], what: str, within_s: float = 20.0, every_s: float = 0.05) -> T:
    """:func:`eventually` for a synchronous ``check`` outside an event loop."""
    last: Any = None
    deadline = time.monotonic() + within_s
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}; last seen: {last!r}")
        time.sleep(every_s)
