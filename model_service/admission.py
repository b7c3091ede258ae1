"""Bounded concurrency: a few requests in the engine, a bounded queue, and 429 at once beyond it.

Waiting forever in an unbounded queue only moves the overload into client timeouts; answering 429
with ``Retry-After`` straight away lets the gateway try another replica instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from common.errors import OverloadedError


class Admission:
    def __init__(self, max_concurrency: int, max_queue: int, retry_after_s: int = 1) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.retry_after_s = retry_after_s
        self._slots = asyncio.Semaphore(max_concurrency)
        self.running = 0
        self.waiting = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one engine slot for the body of the ``async with``; 429 when the queue is full."""
        if self._slots.locked() and self.waiting >= self.max_queue:
            raise OverloadedError(
                f"The worker is at capacity ({self.running} running, {self.waiting} queued); retry shortly.",
                retry_after=self.retry_after_s,
            )
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()
