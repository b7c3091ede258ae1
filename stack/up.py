"""``model-service up``: the whole stack as child processes on one machine.

What runs is a deployment file (``stack/starter.yaml`` unless ``--deployment`` names another;
docs/deployment-file.md). Before any child starts, ``up`` checks that every port is free and the GPUs
exist, then imports into the store what it lacks. The same path a deployed site takes, with a local
folder as the store by default: the model registry serves that store, the workers fetch and
verify their model from it and register with the service registry, and the gateway routes from the
registry's snapshot. ``up`` waits until the gateway lists every model, prints where to go, and on
Ctrl-C or SIGTERM stops every child (SIGTERM, then SIGKILL after a grace period). Children are also
told by the kernel to stop if this supervisor dies abruptly, so no process is ever left behind.

Once up, it also serves a loopback control endpoint (stack/control.py) through which ``model-service
apply`` and ``models alias --rollout`` change the running workers, rolling (stack/rollout.py).
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import ValidationError

from common.auth import AuthSettings
from stack.control import ControlServer, create_control_app
from stack.deployment import Deployment
from stack.plan import (
    REGISTRY_NAMES,
    Child,
    PlanError,
    Planner,
    environment,
    local_gpu_assignment,
    taken_ports,
    write_prometheus_targets,
)
from stack.sources import SourceProblem, ensure_in_store
from stack.starters import StarterModelError

_PR_SET_PDEATHSIG = 1
STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class StackOptions:
    deployment: Deployment
    ready_timeout: float = 600.0
    log_level: str = "warning"
    text: str | None = None  # the file's text, kept for GET /deployment (comments and all) while it matches


def _die_with_parent() -> None:
    """Runs in the child before exec: ask the kernel for SIGTERM when the supervisor dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class LocalStack:
    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.children: list[Child] = []
        self.auth = AuthSettings(_env_file=None, auth=False)  # the real one is read in run()
        self._stopping = False
        # Live changes (stack/rollout.py) run in the control server's thread: children change under
        # this lock, one apply at a time, and replicas still starting are stopped with the rest.
        self._lock = threading.Lock()
        self.apply_lock = threading.Lock()
        self.starting: list[Child] = []
        self._launches: queue.Queue[tuple[Child, threading.Event]] = queue.Queue()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def workers(self) -> list[Child]:
        with self._lock:
            return [c for c in self.children if c.model is not None]

    def gateway(self) -> Child:
        return self.children[-1]

    def admin_headers(self) -> dict[str, str]:
        return _admin_headers(self.auth)

    def launch(self, child: Child) -> None:
        """Start a new replica; until :meth:`promote`, its exit is the rollout's business, not a crash.

        The main thread forks it: the kernel's parent-death signal follows the forking *thread*, so a
        child forked by the apply thread would be stopped when that thread ends."""
        started = threading.Event()
        with self._lock:
            if self._stopping:
                return
            self.starting.append(child)
        self._launches.put((child, started))
        while not started.wait(0.5) and not self._stopping:
            pass

    def promote(self, child: Child) -> None:
        with self._lock:
            self.starting.remove(child)
            self.children.insert(len(self.children) - 1, child)  # the gateway stays last

    def retire(self, child: Child) -> None:
        """Take a replica out of supervision before it is stopped on purpose."""
        with self._lock:
            for group in (self.children, self.starting):
                if child in group:
                    group.remove(child)

    def prepare(self) -> list[Child]:
        """Everything that can fail before a child starts: ports, GPUs, auth settings, the store."""
        d = self.options.deployment
        os.environ.update(environment(d))  # the store and auth the file names, for us and every child
        taken = taken_ports(d)
        if taken:
            raise PlanError("\n".join(taken))
        gpus = local_gpu_assignment(d)
        self.auth = AuthSettings()  # a bad key setup stops here, before any child starts
        revisions: dict[str, str] = {}
        if any(m.engine != "fake" for m in d.models):
            print("Putting the models into the model store (the first run converts and copies them once)...",
                  flush=True)
            revisions = ensure_in_store(d)
        if d.monitoring.prometheus_targets is not None:
            write_prometheus_targets(d, d.monitoring.prometheus_targets)
        return Planner(d, revisions, self.options.log_level, gpus).children()

    # --- run ----------------------------------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            self.children = self.prepare()
            # Its port is taken now (it serves once the stack is ready), so the gateway can be told where
            # it is: the console's Deployment panel applies through it.
            control = ControlServer(create_control_app(self, self.auth), self.options.deployment.ports.gateway)
            self.gateway().env["GATEWAY_CONTROL_URL"] = control.url
            for child in self.children:
                self._start(child)
            if not self._wait_ready(self.workers()):
                control.sock.close()
                return 1
            control.start()
            try:
                self._print_banner()
                return self._supervise()
            finally:
                control.stop()
        except (StarterModelError, SourceProblem, PlanError, ValidationError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
        finally:
            self.stop()

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._stopping = True
        raise KeyboardInterrupt

    def _start(self, child: Child) -> None:
        env = {**os.environ, **child.env, "PYTHONUNBUFFERED": "1"}
        child.proc = subprocess.Popen(
            child.argv, env=env, cwd=Path.cwd(), start_new_session=True, preexec_fn=_die_with_parent
        )

    def _dead(self) -> Child | None:
        with self._lock:
            children = list(self.children)
        return next((c for c in children if c.proc is not None and c.proc.poll() is not None), None)

    def _wait_ready(self, workers: list[Child]) -> bool:
        """Ready when the gateway lists every worker's model (so the first request works)."""
        wanted = {c.model for c in workers}
        gateway = self.children[-1]
        deadline = time.monotonic() + self.options.ready_timeout
        with httpx.Client(timeout=2.0, headers=_admin_headers(self.auth)) as client:
            while time.monotonic() < deadline:
                dead = self._dead()
                if dead is not None:
                    print(f"error: {dead.name} exited with code {dead.proc.returncode} during start-up",
                          file=sys.stderr)
                    return False
                try:
                    listed = {m["id"] for m in client.get(f"{gateway.url}/v1/models").json()["data"]}
                    if wanted <= listed:
                        return True
                except (httpx.HTTPError, ValueError, KeyError, TypeError):
                    pass
                time.sleep(0.5)
        print(f"error: the stack was not ready within {self.options.ready_timeout:.0f} s", file=sys.stderr)
        return False

    def _print_banner(self) -> None:
        gateway = self.children[-1]
        width = max(len(c.name) for c in self.children)
        lines = ["", "Model Service Platform is up.", f"  {'gateway':<{width}} {gateway.url}/v1"]
        for c in self.children[:-1]:
            what = c.model if c.model is not None else {"registry": "service registry",
                                                                   "models": "model registry"}[c.name]
            lines.append(f"  {c.name:<{width}} {c.url}  ({what})")
        auth = ""
        if self.auth.auth:  # keys on (a .env says so): show how to get one and use it
            lines += ["", "API keys are on. Make one (the admin key comes from MODEL_SERVICE_ADMIN_KEY):",
                      f"  export KEY=$(model-service keys create --url {gateway.url} --name me)"]
            auth = " -H \"Authorization: Bearer $KEY\""
        lines += [
            "",
            "Try:",
            f"  curl {gateway.url}/v1/chat/completions -H 'Content-Type: application/json'{auth} \\",
            """    -d '{"messages": [{"role": "user", "content": "What is the capital of France?"}]}'""",
            "",
            "Press Ctrl-C to stop.",
            "",
        ]
        print("\n".join(lines), flush=True)

    def _supervise(self) -> int:
        while not self._stopping:
            dead = self._dead()
            if dead is not None:
                print(f"error: {dead.name} exited with code {dead.proc.returncode}; stopping the stack",
                      file=sys.stderr)
                return 1
            try:
                child, started = self._launches.get(timeout=0.5)
            except queue.Empty:
                continue
            with self._lock:
                if child in self.starting and not self._stopping:
                    self._start(child)
            started.set()
        return 0

    def stop(self) -> None:
        """Stop the gateway and workers first, then the registries (so workers can deregister).

        Each wave gets SIGTERM on every process group, a grace period, then SIGKILL for what is left.
        """
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with self._lock:
            self._stopping = True
            children = [*self.children, *self.starting]
        waves = [[c for c in children if c.name not in REGISTRY_NAMES],
                 [c for c in children if c.name in REGISTRY_NAMES]]
        stopped = False
        for wave in waves:
            running = [c.proc for c in wave if c.proc is not None and c.proc.poll() is None]
            stopped = stopped or bool(running)
            _stop_all(running)
        if stopped:
            print("Stopped.", flush=True)


def _admin_headers(auth: AuthSettings) -> dict[str, str]:
    """The admin key as a bearer when ``MODEL_SERVICE_AUTH`` is on (a ``.env`` copied from the example
    turns it on for the embedded stack too), so the readiness check sees the gateway's model list."""
    if not auth.auth or auth.admin_key is None:
        return {}
    return {"authorization": f"Bearer {auth.admin_key.get_secret_value()}"}


def _stop_all(running: list[subprocess.Popen[bytes]]) -> None:
    for proc in running:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for proc in running:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
