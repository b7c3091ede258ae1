"""Continuous client load through the gateway, for "zero failed requests while X changes" tests.

Each client is a thread with the real ``openai`` SDK (no retries: a failure the gateway lets through
is counted, not hidden) running one kind of request in a loop until the load stops, bounded in count.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from openai import OpenAI

MAX_REQUESTS_PER_CLIENT = 5000


def chat(model: str) -> Callable[[OpenAI, int], Any]:
    def call(client: OpenAI, i: int) -> Any:
        return client.chat.completions.create(model=model, max_tokens=2,
                                              messages=[{"role": "user", "content": f"Say {i}"}])
    return call


def embeddings(model: str) -> Callable[[OpenAI, int], Any]:
    def call(client: OpenAI, i: int) -> Any:
        return client.embeddings.create(model=model, input=[f"sentence {i}"])
    return call


@dataclass
class Load:
    base_url: str
    calls: list[Callable[[OpenAI, int], Any]]  # one per client thread
    done: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        client = OpenAI(base_url=self.base_url, api_key="unused", max_retries=0, timeout=120)
        for n, call in enumerate(self.calls):
            thread = threading.Thread(target=self._loop, args=(client, call), name=f"load-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _loop(self, client: OpenAI, call: Callable[[OpenAI, int], Any]) -> None:
        for i in range(MAX_REQUESTS_PER_CLIENT):
            if self._stop.is_set():
                return
            try:
                call(client, i)
            except Exception as exc:  # every kind of failure is what the test counts
                with self._lock:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
            else:
                with self._lock:
                    self.done += 1

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=150)
