"""Supervise an engine's own OpenAI-compatible server (llama.cpp's ``llama-server``, vLLM) as a child.

The worker keeps its contract (store, registration, health, metrics, admission) and relays requests
to an engine server it runs on a loopback port. This module is the engine-agnostic part: start the
child in its own process group (so the whole engine, with any processes it forks, is stopped as
one), wait until its readiness endpoint answers, notice when it dies (any signal, SIGKILL included)
and restart it with exponential backoff, bounded per time window so a crash loop ends in a visible
``failed`` state instead of spinning. ``stop()`` always reaps: no zombie, no orphan.

No torch here, and nothing blocking in the async functions: the child is an asyncio subprocess and
its readiness is polled with the one ``httpx.AsyncClient`` the supervisor owns for relaying.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import logging
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import httpx

from common.http_pool import pooled_client

log = logging.getLogger(__name__)


class EngineState(enum.StrEnum):
    STARTING = "starting"  # first start, not answering yet
    READY = "ready"
    RESTARTING = "restarting"  # the child died; waiting out the backoff or starting again
    FAILED = "failed"  # too many restarts in the window, or it never came up: given up
    STOPPED = "stopped"


@dataclass(frozen=True)
class EngineStatus:
    """What ``/health`` reports about the engine: its state, how many restarts in the current window,
    the last exit code (negative: killed by that signal) and the running child's pid."""

    state: EngineState
    restarts: int = 0
    last_exit_code: int | None = None
    pid: int | None = None
    detail: str = ""


class EngineFailed(RuntimeError):
    """The engine server did not become ready, or kept dying: the supervisor gave up."""


def free_loopback_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just handed out on ``host``; the child binds it right after (small race:
    if another process takes it first, the child exits and the restart path tries again)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


try:  # looked up before any fork: the child's pre-exec hook must not import or allocate much
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _PRCTL = None
_PR_SET_PDEATHSIG, _SIGKILL = 1, int(signal.SIGKILL)


def _die_with_parent() -> None:
    """Child pre-exec (Linux): SIGKILL the engine if the worker itself dies without stopping it
    (killed with SIGKILL, say), so an engine never outlives its worker holding memory and a port."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, _SIGKILL)


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _exited(proc: asyncio.subprocess.Process, within_s: float | None = None) -> int | None:
    """The child's exit code once it has exited (None if ``within_s`` passes first). Polled rather
    than ``proc.wait()``: that also waits for the output pipe to close, which never happens while a
    process the engine forked (vLLM's engine core, say) still holds it, so a dead engine would go
    unnoticed until its leftovers die too."""
    deadline = None if within_s is None else time.monotonic() + within_s
    while proc.returncode is None:
        if deadline is not None and time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.1)
    return proc.returncode


class EngineServer:
    """One engine server child, kept running until ``stop()``.

    ``argv`` gets the loopback port (picked once, kept across restarts so ``base_url`` and the relay
    client stay valid) and returns the command line; ``env`` is added to this process's environment.
    The child's output goes line by line to our logger, so it lands wherever the worker's log goes.
    """

    def __init__(self, name: str, argv: Callable[[int], Sequence[str]], *, env: Mapping[str, str] | None = None,
                 host: str = "127.0.0.1", port: int | None = None, health_path: str = "/health",
                 start_timeout_s: float = 120.0, stop_grace_s: float = 10.0, max_restarts: int = 5,
                 restart_window_s: float = 300.0, backoff_s: float = 1.0, max_backoff_s: float = 30.0) -> None:
        self.name = name
        self.host = host
        self.port = port or free_loopback_port(host)
        self.base_url = f"http://{host}:{self.port}"
        self._argv, self._env, self._health_path = argv, dict(env or {}), health_path
        self.start_timeout_s, self.stop_grace_s = start_timeout_s, stop_grace_s
        self.max_restarts, self.restart_window_s = max_restarts, restart_window_s
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self._status = EngineStatus(EngineState.STOPPED)
        self._proc: asyncio.subprocess.Process | None = None
        self._restarts: deque[float] = deque()  # monotonic times of the restarts still in the window
        self._settled = asyncio.Event()  # set when READY or FAILED (what start() waits for)
        self._watch: asyncio.Task[None] | None = None
        self._relay: asyncio.Task[None] | None = None
        self._stopping = False
        self._client: httpx.AsyncClient | None = None

    @property
    def status(self) -> EngineStatus:
        return self._status

    @property
    def client(self) -> httpx.AsyncClient:
        """The relay client, based at the child's URL. No read timeout: a long generation streams for
        as long as it streams; the worker's own deadlines and client-disconnect cancellation apply."""
        if self._client is None:
            raise RuntimeError(f"engine server {self.name} is not started")
        return self._client

    async def start(self, wait: bool = True) -> None:
        """Start the child and the watch task; with ``wait``, return once it answers its readiness
        endpoint (raise ``EngineFailed`` if it gives up first). The worker starts with ``wait=False``
        and reports ``starting`` from ``/health`` meanwhile."""
        if self._watch is not None:
            raise RuntimeError(f"engine server {self.name} already started")
        # Small pools (common.http_pool): every admitted stream holds a connection to the child, and one
        # big httpcore pool costs more per request the more it holds. No proxy from the environment.
        self._client = pooled_client(httpx.Limits(max_connections=None, max_keepalive_connections=64),
                                     base_url=self.base_url, timeout=httpx.Timeout(None, connect=5.0))
        self._status = EngineStatus(EngineState.STARTING)
        self._watch = asyncio.create_task(self._supervise(), name=f"engine-{self.name}")
        if wait:
            await self.wait_ready()

    async def wait_ready(self) -> None:
        """Wait until the engine is ready (bound it with ``asyncio.timeout``); ``EngineFailed`` if the
        supervisor gave up."""
        await self._settled.wait()
        if self._status.state is not EngineState.READY:
            raise EngineFailed(f"engine server {self.name} failed: {self._status.detail}")

    async def _supervise(self) -> None:
        """Keep the child running until ``stop()``; any error here ends in ``failed``, never in a
        supervisor that silently stopped watching (a missing binary, say)."""
        try:
            while not self._stopping and await self._run_once():
                pass
        except Exception as exc:
            log.exception("engine server %s: supervision failed", self.name)
            self._set(EngineState.FAILED, detail=f"{type(exc).__name__}: {exc}")

    async def _run_once(self) -> bool:
        """One life of the child: start, wait until it answers, wait until it dies, then back off.
        False when it is not to be restarted (stopping, or the restart budget is spent)."""
        proc = await self._spawn()
        if await self._wait_answering(proc):
            self._set(EngineState.READY, pid=proc.pid)
            await _exited(proc)
            why = "exited"
        else:
            why = "exited while starting" if proc.returncode is not None else (
                f"no answer on {self._health_path} within {self.start_timeout_s:.0f}s")
        code = await self._end(proc)  # also kills whatever it forked, and reaps it
        if self._stopping:
            return False
        if not self._may_restart():
            self._set(EngineState.FAILED, last_exit_code=code, detail=(
                f"{why} ({code}); {self.max_restarts} restarts in {self.restart_window_s:.0f}s already"))
            log.error("engine server %s: giving up: %s (%s)", self.name, why, code)
            return False
        delay = min(self.backoff_s * 2 ** (len(self._restarts) - 1), self.max_backoff_s)
        self._set(EngineState.RESTARTING, last_exit_code=code, detail=f"{why} ({code}); restart in {delay:.1f}s")
        log.warning("engine server %s %s (%s); restart %d in %.1fs", self.name, why, code, len(self._restarts), delay)
        await asyncio.sleep(delay)
        return True

    def _set(self, state: EngineState, *, pid: int | None = None, last_exit_code: int | None = None,
             detail: str = "") -> None:
        code = last_exit_code if last_exit_code is not None else self._status.last_exit_code
        self._status = EngineStatus(state, len(self._restarts), code, pid, detail)
        if state in (EngineState.READY, EngineState.FAILED):
            self._settled.set()
        else:
            self._settled.clear()

    def _may_restart(self) -> bool:
        """Count this restart in the sliding window; False once the window's budget is spent."""
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] > self.restart_window_s:
            self._restarts.popleft()
        if len(self._restarts) >= self.max_restarts:
            return False
        self._restarts.append(now)
        return True

    async def _spawn(self) -> asyncio.subprocess.Process:
        argv = list(self._argv(self.port))
        proc = await asyncio.create_subprocess_exec(
            *argv, env={**os.environ, **self._env}, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
        self._proc = proc
        log.info("engine server %s: started pid %d on %s: %s", self.name, proc.pid, self.base_url, " ".join(argv))
        if proc.stdout is not None:
            self._relay = asyncio.create_task(self._relay_output(proc.stdout))
        if self._status.state is not EngineState.STARTING:
            self._set(EngineState.RESTARTING, pid=proc.pid, detail="starting again")
        return proc

    async def _relay_output(self, stream: asyncio.StreamReader) -> None:
        """The child's output, line by line, into our log."""
        while line := await stream.readline():
            log.info("[%s] %s", self.name, line.decode(errors="replace").rstrip())

    async def _wait_answering(self, proc: asyncio.subprocess.Process) -> bool:
        """Poll the readiness endpoint until it answers 200; False if the child exits or the start-up
        deadline passes first (a model load can take minutes: vLLM compiles at each start)."""
        deadline = time.monotonic() + self.start_timeout_s
        while proc.returncode is None and time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                response = await self.client.get(self._health_path, timeout=2.0)
                if response.status_code == 200:
                    return True
            await _exited(proc, within_s=0.25)
        return False

    async def _end(self, proc: asyncio.subprocess.Process) -> int:
        """SIGTERM the child's process group, SIGKILL after the grace period; always reaped."""
        if proc.returncode is None:
            _kill_group(proc.pid, signal.SIGTERM)
            if await _exited(proc, within_s=self.stop_grace_s) is None:
                log.warning("engine server %s: no exit %.0fs after SIGTERM; SIGKILL", self.name, self.stop_grace_s)
                _kill_group(proc.pid, signal.SIGKILL)
        code = await _exited(proc)
        _kill_group(proc.pid, signal.SIGKILL)  # the rest of its group, which may still hold its pipe
        with contextlib.suppress(TimeoutError):  # the pipe closes, the transport is done
            await asyncio.wait_for(proc.wait(), 5.0)
        return code

    async def stop(self) -> None:
        """Stop supervising, end the child (and its group), close the relay client. Idempotent."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        proc, self._proc = self._proc, None
        if proc is not None:
            await self._end(proc)
        if self._relay is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._relay, 1.0)
        if self._client is not None:
            await self._client.aclose()
        self._set(EngineState.STOPPED)
        self._settled.set()
