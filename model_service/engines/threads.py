"""The one bridge from an engine's own thread to a request's event loop.

A forward pass blocks, so engines compute on threads of their own (the llm scheduler, the vision
decode thread, the embedding batcher) while requests wait on the event loop. ``thread_stream`` is
where the two meet, for every engine alike: the request hands the engine thread an ``emit`` callback
and a ``cancel`` Event; the thread emits items (deltas, an answer, an exception) and finally
``DONE``; the request iterates them on its own loop. Closing the iterator early (client gone, stop
string seen, task cancelled) sets ``cancel``, which the engine thread checks between steps, and an
engine thread that outlives the request's loop sets it too instead of raising.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

DONE = object()  # the last item a request's stream receives from the engine thread
Emit = Callable[[Any], None]


async def thread_stream(submit: Callable[[Emit, threading.Event], None]) -> AsyncIterator[Any]:
    """Call ``submit(emit, cancel)`` to start the work on an engine thread, then yield what it emits
    until ``DONE``; an emitted exception is raised here, in the request."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    cancel = threading.Event()

    def emit(item: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # loop already closed: nobody is listening any more
            cancel.set()

    submit(emit, cancel)
    try:
        while (item := await queue.get()) is not DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancel.set()
