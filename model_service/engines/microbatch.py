"""Dynamic micro-batching for engines that answer whole requests at once (embeddings, rerank).

One forward pass over 32 inputs costs little more than one over a single input on a CPU or GPU, so
requests do not run one by one: they queue, and one batcher thread takes up to ``max_batch`` inputs
(waiting at most ``max_wait_s`` after the first one for company), runs them together and hands each
request its own answer. Inputs that queued while the previous batch ran go out at once with no extra
wait. The batcher is a thread rather than an asyncio task because the engine outlives any one event
loop (tests share a loaded model) and the model is never shared between threads.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from model_service.engines.hardware import apply_torch_threads
from model_service.engines.threads import Emit, thread_stream
from model_service.engines.transformers_base import TransformersEngine
from model_service.settings import WorkerSettings

log = logging.getLogger(__name__)
_STOP = object()


@dataclass(eq=False)
class Job:
    """One request's inputs, where its answer goes and whether it is still wanted (``thread_stream``)."""

    items: list[Any]
    emit: Emit
    cancel: threading.Event
    arrived: float = field(default_factory=time.monotonic)


def job_spans(jobs: list[Job]) -> Iterator[tuple[Job, int, int]]:
    """Each job with where its own inputs start and end in the batch of all the jobs' inputs."""
    start = 0
    for job in jobs:
        yield job, start, start + len(job.items)
        start += len(job.items)


class MicroBatchedEngine(TransformersEngine):
    """A transformers-family engine whose requests are batched by one thread; subclasses answer a
    batch of jobs in :meth:`answer_jobs` and call :meth:`start_batcher` at the end of ``load``."""

    def __init__(self, settings: WorkerSettings) -> None:
        super().__init__(settings)
        self.max_batch = settings.embedding_max_batch_size  # inputs (or pairs) per batched call
        self.max_wait_s = settings.embedding_max_wait_ms / 1000

    def start_batcher(self) -> None:
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = threading.Thread(target=self._run, name=f"{self.name}-batcher",
                                                                  daemon=True)
        self._thread.start()

    def stop_batcher(self) -> None:
        thread = getattr(self, "_thread", None)
        if thread is not None:
            self._inbox.put(_STOP)
            thread.join(timeout=30)
            self._thread = None

    def close(self) -> None:
        self.stop_batcher()
        self.model = None

    async def submit(self, items: list[Any]) -> Any:
        """Queue one request's inputs and wait for its answer (cancelled: the batcher skips the job)."""
        answers = thread_stream(lambda emit, cancel: self._inbox.put(Job(items, emit, cancel)))
        async with aclosing(answers):
            async for answer in answers:
                return answer
        raise RuntimeError("the batcher stopped before answering")

    @abstractmethod
    def answer_jobs(self, jobs: list[Job]) -> list[Any]:
        """One answer per job, computed in one batched call over all their inputs (batcher thread)."""

    def _run(self) -> None:
        apply_torch_threads(self.settings.model_threads())
        while (jobs := self._gather()) is not None:
            jobs = [j for j in jobs if not j.cancel.is_set()]
            if not jobs:
                continue
            try:
                answers = self.answer_jobs(jobs)
            except Exception as exc:  # every request in the batch gets the error, the thread lives on
                log.exception("%s batch failed", self.name)
                answers = [exc] * len(jobs)
            for job, answer in zip(jobs, answers, strict=True):
                job.emit(answer)

    def _gather(self) -> list[Job] | None:
        """Block for the first job, then collect more until the batch is full or its wait is over."""
        first = self._inbox.get()
        if first is _STOP:
            return None
        jobs, count = [first], len(first.items)
        deadline = first.arrived + self.max_wait_s
        while count < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                job = self._inbox.get(timeout=remaining) if remaining > 0 else self._inbox.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                self._inbox.put(_STOP)  # finish this batch, stop on the next gather
                break
            jobs.append(job)
            count += len(job.items)
        return jobs
