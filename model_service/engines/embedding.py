"""Sentence embeddings through sentence-transformers, dynamically micro-batched off the event loop.

One encode of 32 sentences costs little more than one of a single sentence on a CPU or GPU, so
requests do not encode one by one: they queue, and one batcher thread takes up to
``embedding_max_batch_size`` inputs (waiting at most ``embedding_max_wait_ms`` after the first one
for company), sorts them by length so padding stays small, runs ONE ``encode`` and hands each
request its own slice. Inputs that queued while the previous encode ran go out at once with no
extra wait. The batcher is a thread rather than an asyncio task because the engine outlives any one
event loop (tests share a loaded model) and the model is never shared between threads.
Usage counts come from the model's own tokenizer, capped at ``max_seq_length`` (longer inputs are
truncated before encoding).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from model_service.engines.base import Embedder, Embeddings
from model_service.engines.threads import Emit, thread_stream
from model_service.engines.transformers_base import TransformersEngine
from model_service.settings import WorkerSettings

log = logging.getLogger(__name__)
_STOP = object()


@dataclass(eq=False)
class _Job:
    """One request's inputs, where its answer goes and whether it is still wanted (``thread_stream``)."""

    texts: list[str]
    emit: Emit
    cancel: threading.Event
    arrived: float = field(default_factory=time.monotonic)


class SentenceTransformerEngine(TransformersEngine, Embedder):
    name = "sentence-transformers"
    folder = "a sentence-transformers folder"

    def __init__(self, settings: WorkerSettings) -> None:
        super().__init__(settings)
        self.max_batch = settings.embedding_max_batch_size
        self.max_wait_s = settings.embedding_max_wait_ms / 1000
        self.encode_calls = 0  # read by tests: fewer encodes than requests proves batching
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None

    def load(self) -> None:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(self.model_path, device=self.device, model_kwargs={"dtype": self.dtype})
        self.model = model.eval()
        dims = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.embedding_dims = int(dims())
        self.vocab_size = len(model.tokenizer)
        self.matryoshka_dims = matryoshka_dims(model)
        self.max_model_len = self.settings.max_model_len or int(model.max_seq_length or 512)
        self._thread = threading.Thread(target=self._run, name="embed-batcher", daemon=True)
        self._thread.start()
        log.info("loaded %s on %s (%s), %s dims", self.model_path, self.device, self.dtype, self.embedding_dims)

    def close(self) -> None:
        if self._thread is not None:
            self._inbox.put(_STOP)
            self._thread.join(timeout=30)
            self._thread = None
        self.model = None

    def decode_tokens(self, token_ids: list[int]) -> str:
        return str(self.model.tokenizer.decode(token_ids, skip_special_tokens=True))

    async def embed(self, texts: list[str]) -> Embeddings:
        answers = thread_stream(lambda emit, cancel: self._inbox.put(_Job(texts, emit, cancel)))
        async with aclosing(answers):  # cancelled (client gone): the batcher skips the job
            async for answer in answers:
                return answer
        raise RuntimeError("the embedding batcher stopped before answering")

    # --- the batcher thread --------------------------------------------------------------------
    def _run(self) -> None:
        while (jobs := self._gather()) is not None:
            jobs = [j for j in jobs if not j.cancel.is_set()]
            if not jobs:
                continue
            try:
                answers = self._encode_jobs(jobs)
            except Exception as exc:  # every request in the batch gets the error, the thread lives on
                log.exception("embedding batch failed")
                answers = [exc] * len(jobs)
            for job, answer in zip(jobs, answers, strict=True):
                job.emit(answer)

    def _gather(self) -> list[_Job] | None:
        """Block for the first job, then collect more until the batch is full or its wait is over."""
        first = self._inbox.get()
        if first is _STOP:
            return None
        jobs, count = [first], len(first.texts)
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
            count += len(job.texts)
        return jobs

    def _encode_jobs(self, jobs: list[_Job]) -> list[Embeddings]:
        """ONE encode over every input, longest first so each forward pass pads little (a request
        with more inputs than a batch still goes in this one call, as several forward passes)."""
        texts = [t for job in jobs for t in job.texts]
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        vectors = self.model.encode([texts[i] for i in order], batch_size=self.max_batch,
                                    convert_to_numpy=True, show_progress_bar=False)
        self.encode_calls += 1
        self.observe_batch(len(texts))
        by_input: list[Any] = [None] * len(texts)
        for pos, i in enumerate(order):
            by_input[i] = vectors[pos].astype("float32").tolist()
        tokenized = self.model.tokenizer(texts, add_special_tokens=True, truncation=True,
                                         max_length=self.max_model_len)
        counts = [len(ids) for ids in tokenized["input_ids"]]
        answers, start = [], 0
        for job in jobs:
            end = start + len(job.texts)
            answers.append(Embeddings(vectors=by_input[start:end], prompt_tokens=sum(counts[start:end])))
            start = end
        return answers


def matryoshka_dims(model: Any) -> tuple[int, ...] | None:
    """The sizes the model's config says it may be cut to (vLLM reads the same two keys): its
    ``matryoshka_dimensions``, or any size for ``is_matryoshka``; None when it declares neither."""
    config = getattr(getattr(model[0], "auto_model", None), "config", None)
    declared = getattr(config, "matryoshka_dimensions", None)
    if declared:
        return tuple(int(d) for d in declared)
    return () if getattr(config, "is_matryoshka", False) else None
