"""Background download/import jobs: asyncio tasks that run the blocking sources in threads.

Jobs are coalesced (a second request for the same model and revision gets the running job), report
progress, and are persisted as ``_jobs/<id>.json`` in the store. A registry that restarts finds the
jobs that were queued or running, and either resumes them (files already stored are re-verified, not
re-sent) or, with resuming off or impossible, marks them failed and deletes the partial revision.
Nothing becomes visible to readers until a revision's manifest is complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.errors import APIError
from model_registry.catalog import Catalog
from model_registry.errors import JobNotFoundError
from model_registry.ingest import Progress
from model_registry.records import ACTIVE_STATES, JobRecord, utc_now
from model_registry.sources.bundle import import_bundle
from model_registry.sources.folder import import_folder
from model_registry.sources.gguf import import_gguf, is_gguf_path
from model_registry.sources.gguf_export import export_gguf
from model_registry.sources.hf import HubConfig, download_hf
from model_registry.sources.onnx_export import export_onnx

log = logging.getLogger(__name__)
JOBS_PREFIX = "_jobs/"
JOB_ID = re.compile(r"^[0-9a-f]{32}$")


class JobStopped(Exception):
    """Raised inside a job's thread when the app shuts down; the job stays resumable."""


class JobRunner:
    def __init__(self, catalog: Catalog, hub: HubConfig, *, max_concurrent: int = 2, tmp_dir: Path | None = None,
                 resume: bool = True, persist_interval_s: float = 0.5) -> None:
        self.catalog = catalog
        self.store = catalog.store
        self.hub = hub
        self.tmp_dir = tmp_dir
        self.resume = resume
        self.persist_interval_s = persist_interval_s
        self.jobs: dict[str, JobRecord] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(max_concurrent)
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    # Life cycle.
    async def start(self) -> None:
        """Pick up jobs a previous process left queued or running."""
        records = await asyncio.to_thread(self._load_unfinished)
        for record in records:
            if self.resume and self._resumable(record):
                record.resumed += 1
                record.state = "queued"
                log.info("resuming job %s (%s %s)", record.id, record.kind, record.model_id)
                self._launch(record)
            else:
                await asyncio.to_thread(self._abandon, record)

    async def stop(self) -> None:
        """Stop running jobs at their next chunk; they stay ``running`` in the store for a resume."""
        self._stopping.set()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # Submitting.
    def submit(self, kind: str, model_id: str, *, revision: str | None = None, model_type: str | None = None,
               params: dict[str, Any] | None = None, resolved_revision: str | None = None) -> JobRecord:
        """Start a job, or return the active one for the same kind, model, revision and parameters."""
        params = params or {}
        for job in self.jobs.values():
            if (job.state in ACTIVE_STATES and job.kind == kind and job.model_id == model_id
                    and job.revision == revision and job.params == params):
                return job
        record = JobRecord(id=uuid.uuid4().hex, kind=kind, model_id=model_id, revision=revision,  # type: ignore[arg-type]
                           model_type=model_type, params=params,  # type: ignore[arg-type]
                           resolved_revision=resolved_revision)
        self._launch(record)
        return record

    def get(self, job_id: str) -> JobRecord:
        job = self.jobs.get(job_id)
        if job is None and JOB_ID.match(job_id):
            data = self.store.get_json(f"{JOBS_PREFIX}{job_id}.json")
            job = JobRecord.model_validate(data) if data else None
        if job is None:
            raise JobNotFoundError(f"No job '{job_id[:64]}'.", param="job_id")
        return job

    def active_for(self, model_id: str) -> list[JobRecord]:
        return [j for j in self.jobs.values() if j.model_id == model_id and j.state in ACTIVE_STATES]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(("queued", "running", "done", "failed"), 0)
        for job in list(self.jobs.values()):  # a copy: metrics read this from a scrape thread
            out[job.state] += 1
        return out

    def running(self) -> list[JobRecord]:
        """Jobs storing files now; their ``bytes_done``/``bytes_total`` are the live progress."""
        return [job for job in list(self.jobs.values()) if job.state == "running"]

    async def wait(self, job_id: str) -> JobRecord:
        """Wait until a job finishes (callers bound it with ``asyncio.timeout``)."""
        task = self._tasks.get(job_id)
        if task is not None:
            await asyncio.shield(task)
        return self.get(job_id)

    # Running.
    def _launch(self, record: JobRecord) -> None:
        """Register and schedule; the first store write happens in the task (never on the event loop)."""
        self.jobs[record.id] = record
        task = asyncio.create_task(self._run(record), name=f"job-{record.id}")
        self._tasks[record.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(record.id, None))

    async def _run(self, record: JobRecord) -> None:
        await asyncio.to_thread(self._persist, record)
        async with self._slots:
            record.state = "running"
            record.error = None
            await asyncio.to_thread(self._persist, record)
            try:
                await asyncio.to_thread(self._work, record)
            except JobStopped:
                return
            except APIError as exc:
                await asyncio.to_thread(self._fail, record, exc.message)
                return
            except Exception as exc:
                log.exception("job %s failed", record.id)
                await asyncio.to_thread(self._fail, record, f"{type(exc).__name__}: {exc}")
                return
            record.state = "done"
            record.files_done = record.files_total
            await asyncio.to_thread(self._persist, record)

    def _work(self, record: JobRecord) -> None:
        """The blocking part, in a worker thread: run the source for this kind of job."""
        record.bytes_done = record.files_done = 0
        progress = Progress(on_change=self._progress_hook(record))
        params = record.params
        if record.kind == "download":
            def resolved(sha: str) -> None:
                record.resolved_revision = sha
                self._persist(record)

            download_hf(self.catalog, self.hub, record.model_id, record.revision, record.model_type,
                        params.get("allow_patterns"), params.get("ignore_patterns"), progress, self.tmp_dir,
                        on_resolved=resolved)
        elif record.kind == "import" and is_gguf_path(params["path"]):
            manifest = import_gguf(self.catalog, record.model_id, params["path"], record.model_type, progress,
                                   revision=record.revision, tmp_dir=self.tmp_dir)
            record.resolved_revision = manifest.revision
        elif record.kind == "import":
            manifest = import_folder(self.catalog, record.model_id, params["path"], record.model_type, progress,
                                     revision=record.revision)
            record.resolved_revision = manifest.revision
        elif record.kind == "onnx-export":
            manifest = export_onnx(self.catalog, record.model_id, record.revision, params.get("quantize"), progress,
                                   self.tmp_dir, make_current=bool(params.get("make_current")))
            record.resolved_revision = manifest.revision
        elif record.kind == "gguf-export":
            manifest = export_gguf(self.catalog, record.model_id, record.revision, params["outtype"], progress,
                                   self.tmp_dir, make_current=bool(params.get("make_current")))
            record.resolved_revision = manifest.revision
        else:
            manifests = import_bundle(self.catalog, Path(params["path"]), progress)
            record.resolved_revision = ",".join(m.revision for m in manifests)

    def _progress_hook(self, record: JobRecord) -> Callable[[Progress], None]:
        last = [0.0]

        def hook(progress: Progress) -> None:
            if self._stopping.is_set():
                raise JobStopped()
            record.bytes_done, record.bytes_total = progress.bytes_done, progress.bytes_total
            record.files_done, record.files_total = progress.files_done, progress.files_total
            now = time.monotonic()
            if now - last[0] >= self.persist_interval_s:
                last[0] = now
                self._persist(record)

        return hook

    def _fail(self, record: JobRecord, message: str) -> None:
        """Delete the partial revision first, then say "failed": a client that sees the state must
        never find half-written files still there."""
        if record.kind != "bundle" and record.resolved_revision:
            with contextlib.suppress(Exception):
                self.catalog.discard_partial(record.model_id, record.resolved_revision)
        record.state = "failed"
        record.error = message
        self._persist(record)

    def _persist(self, record: JobRecord) -> None:
        with self._lock:
            record.updated_at = utc_now()
            try:
                self.store.put_json(f"{JOBS_PREFIX}{record.id}.json", record.model_dump())
            except Exception:  # progress reporting must not kill the job; the next write retries
                log.warning("could not persist job %s", record.id, exc_info=True)

    # Restart handling.
    def _load_unfinished(self) -> list[JobRecord]:
        out = []
        for key in self.store.list(JOBS_PREFIX):
            with contextlib.suppress(Exception):
                record = JobRecord.model_validate(self.store.get_json(key))
                if record.state in ACTIVE_STATES:
                    out.append(record)
                else:
                    self.jobs[record.id] = record
        return out

    @staticmethod
    def _resumable(record: JobRecord) -> bool:
        if record.kind in ("download", "onnx-export", "gguf-export"):  # their source is still there: hub, store
            return True
        path = record.params.get("path")
        return bool(path) and Path(path).exists()

    def _abandon(self, record: JobRecord) -> None:
        """A job that cannot continue: mark it failed and delete what it half-wrote."""
        log.warning("cleaning up interrupted job %s (%s %s)", record.id, record.kind, record.model_id)
        revision = record.resolved_revision or (record.revision if record.kind == "import" else None)
        if revision and record.kind != "bundle":
            with contextlib.suppress(Exception):
                self.catalog.discard_partial(record.model_id, revision)
        record.state = "failed"
        record.error = "Interrupted by a registry restart and not resumed; partial files were removed."
        self.jobs[record.id] = record
        self._persist(record)
