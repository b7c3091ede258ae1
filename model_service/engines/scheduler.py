"""Continuous batching: one generation thread interleaving prefill of new requests with batched decode.

Each turn of the loop (a token boundary) takes new requests, drops rows whose request was cancelled
or stopped, prefills waiting prompts up to ``max_batch_tokens`` tokens in one forward pass while the
batch has room, then runs ONE decode pass that advances every running row by a token. New requests
therefore join a running batch within one step, finished ones leave at once, and a cancelled
request's row is gone by the next step, so its slot serves the next waiting request.

A prompt longer than ``max_batch_tokens`` is prefilled in chunks, one chunk per turn, so a long
prompt never stalls the streams already running for more than one chunk. Forward passes are
counted (``prefill_calls``, ``decode_calls``) so tests can prove that requests share them.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import torch

from model_service.engines.hardware import apply_torch_threads
from model_service.engines.llm_batch import KVBatch, Sequence, left_pad, positions

log = logging.getLogger(__name__)
_STOP = object()


class BatchScheduler:
    def __init__(self, model: Any, *, max_batch_size: int, max_batch_tokens: int, pad_id: int,
                 device: str, done: object, on_step: Callable[[int], None] | None = None,
                 threads: int | None = None) -> None:
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.pad_id = pad_id
        self.device = device
        self._done = done  # the marker that tells a request's iterator its sequence has left
        self._on_step = on_step  # told the rows of every decode step (the batch-size metric)
        self._threads = threads  # torch intra-op threads, set in the generation thread (hardware.apply_torch_threads)
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._waiting: list[Sequence] = []
        self._batch = KVBatch()
        # Counters read by tests and metrics; each is written by the generation thread only.
        self.prefill_calls = 0
        self.decode_calls = 0
        self.peak_batch = 0
        self.submitted = 0
        self.left = 0
        self._thread = threading.Thread(target=self._run, name="llm-scheduler", daemon=True)
        self._thread.start()

    @property
    def forward_calls(self) -> int:
        return self.prefill_calls + self.decode_calls

    @property
    def active(self) -> int:
        """Sequences waiting or running (``submitted`` is only written by the event loop thread)."""
        return self.submitted - self.left

    @property
    def running(self) -> int:
        return len(self._batch)

    def submit(self, seq: Sequence) -> None:
        self.submitted += 1
        self._inbox.put(seq)

    def close(self) -> None:
        self._inbox.put(_STOP)
        self._thread.join(timeout=30)

    # --- the generation thread ---------------------------------------------------------------
    def _run(self) -> None:
        apply_torch_threads(self._threads)
        with torch.inference_mode():
            while self._take_new():
                try:
                    self._turn()
                except Exception as exc:  # reaches every request involved, never kills the thread
                    log.exception("batched generation failed")
                    self._fail_all(exc)

    def _take_new(self) -> bool:
        """Move submitted requests to the waiting list; block only when there is nothing to do."""
        idle = not self._batch.rows and not self._waiting
        try:
            item = self._inbox.get(block=idle)
            while True:
                if item is _STOP:
                    self._fail_all(None)
                    return False
                self._waiting.append(item)
                item = self._inbox.get_nowait()
        except queue.Empty:
            return True

    def _turn(self) -> None:
        self._drop_cancelled()
        if self._waiting and len(self._batch) < self.max_batch_size:
            self._prefill()
        if self._batch.rows:
            if self._on_step is not None:
                self._on_step(len(self._batch.rows))
            raw = self._batch.step(self.model)
            self.decode_calls += 1
            finished = [seq.advance(raw[i]) for i, seq in enumerate(self._batch.rows)]
            self._leave([seq for seq, done in zip(self._batch.rows, finished, strict=True) if done])
            self._batch.keep([i for i, done in enumerate(finished) if not done])

    def _drop_cancelled(self) -> None:
        gone = [s for s in self._waiting if s.cancel.is_set()]
        if gone:
            self._waiting = [s for s in self._waiting if not s.cancel.is_set()]
            self._leave(gone)
        cancelled = [seq.cancel.is_set() for seq in self._batch.rows]
        if any(cancelled):
            self._leave([seq for seq, gone in zip(self._batch.rows, cancelled, strict=True) if gone])
            self._batch.keep([i for i, gone in enumerate(cancelled) if not gone])

    def _leave(self, seqs: list[Sequence]) -> None:
        for seq in seqs:
            seq.cache = None
            seq.emit(self._done)
            self.left += 1

    def _fail_all(self, exc: BaseException | None) -> None:
        everyone = self._waiting + self._batch.rows
        self._waiting, self._batch = [], KVBatch()
        for seq in everyone:
            if exc is not None:
                seq.emit(exc)
        self._leave(everyone)

    # --- prefill -----------------------------------------------------------------------------
    def _prefill(self) -> None:
        """Prefill the head of the queue: a chunk of one long prompt, or several whole prompts."""
        head = self._waiting[0]
        if head.prefilled or len(head.prompt_ids) > self.max_batch_tokens:
            self._prefill_chunk(head)
            return
        room = self.max_batch_size - len(self._batch)
        group: list[Sequence] = []
        for seq in self._waiting[:room]:
            width = max([len(s.prompt_ids) for s in group] + [len(seq.prompt_ids)])
            if seq.prefilled or (group and width * (len(group) + 1) > self.max_batch_tokens):
                break
            group.append(seq)
        del self._waiting[:len(group)]
        ids, mask = left_pad([s.prompt_ids for s in group], self.pad_id, self.device)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions(mask),
                         use_cache=True, logits_to_keep=1)
        self.prefill_calls += 1
        self._admit(group, out.past_key_values, mask, out.logits[:, -1])

    def _prefill_chunk(self, seq: Sequence) -> None:
        start = seq.prefilled
        chunk = seq.prompt_ids[start:start + self.max_batch_tokens]
        ids = torch.tensor([chunk], dtype=torch.long, device=self.device)
        pos = torch.arange(start, start + len(chunk), device=self.device).unsqueeze(0)
        out = self.model(input_ids=ids, position_ids=pos, past_key_values=seq.cache, use_cache=True,
                         logits_to_keep=1)
        self.prefill_calls += 1
        seq.cache, seq.prefilled = out.past_key_values, start + len(chunk)
        if seq.prefilled == len(seq.prompt_ids):
            self._waiting.remove(seq)
            mask = torch.ones((1, seq.prefilled), dtype=torch.long, device=self.device)
            cache, seq.cache = seq.cache, None
            self._admit([seq], cache, mask, out.logits[:, -1])

    def _admit(self, group: list[Sequence], cache: Any, mask: torch.Tensor, raw: torch.Tensor) -> None:
        """Sample each prefilled row's first token; rows that are not finished join the decode batch."""
        finished = [seq.advance(raw[i]) for i, seq in enumerate(group)]
        self._leave([seq for seq, done in zip(group, finished, strict=True) if done])
        keep = [i for i, done in enumerate(finished) if not done]
        if keep:
            index = torch.tensor(keep, dtype=torch.long, device=self.device)
            if len(keep) < len(group):
                cache.batch_select_indices(index)
                mask = mask.index_select(0, index)
            self._batch.join([group[i] for i in keep], cache, mask)
            self.peak_batch = max(self.peak_batch, len(self._batch))
