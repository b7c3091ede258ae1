"""``model-service apply``: change a running local stack to match a deployment file, rolling.

The diff is per replica, keyed by (served name, replica number): a replica only the file has is
started, one only the stack runs is stopped, and one whose process would differ (engine, engine
arguments, limits, placement, or the store revision its source resolves to now) is replaced. A
replica that would only move to another port keeps running where it is: the file's ports are where
new replicas start, never a reason to restart a healthy one.

The order never lowers capacity before it is replaced: first every start (new models, scale-ups),
then each replacement one at a time (the new replica starts on a free port and must be usable in the
gateway's own view, which means healthy, registered and followed, before the old one drains), then
the stops (scale-downs, removed models). A stop is a drain (model_service/drain.py): the worker
deregisters, answers new requests with a 503 the gateway fails over on, finishes what it has, exits.
A new replica that dies or never becomes usable ends the apply there: it is stopped, the old
replicas keep serving, and the answer says what failed.

What a running stack cannot change (host, global ports, store, auth, monitoring) is refused as a
whole with the reason: those need ``up`` again. The gateway's default models stay as ``up`` started
them; the plan says so when the file's defaults differ.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import httpx

from model_service.settings import WorkerSettings
from stack.deployment import Deployment
from stack.plan import (
    Child,
    Planner,
    advertise_host,
    any_free_port,
    local_gpu_assignment,
    port_problem,
    write_prometheus_targets,
)
from stack.sources import ensure_in_store

if TYPE_CHECKING:
    from stack.up import LocalStack

Event = dict[str, Any]
Say = Callable[[Event], None]
# Beyond the worker's own drain timeout, how long a draining worker may take to exit before SIGKILL.
EXIT_GRACE_S = 15.0


class ApplyRefused(ValueError):
    """The file changes what only a fresh ``up`` can change; nothing was touched."""


@dataclass(frozen=True)
class Step:
    action: Literal["start", "replace", "stop"]
    model: str
    replica: int
    why: str

    def view(self) -> Event:
        return {"action": self.action, "model": self.model, "replica": self.replica, "why": self.why}


def restart_only_changes(running: Deployment, desired: Deployment) -> list[str]:
    """What differs outside ``models``, each a reason to refuse the apply."""
    return [f"{key} changed" for key in ("host", "ports", "store", "auth", "monitoring")
            if getattr(running, key) != getattr(desired, key)]


def notes(running: Deployment, desired: Deployment) -> list[str]:
    """What the apply leaves as it is and the user should know: the gateway keeps the default models it
    started with (a request without ``model`` for a removed default gets a clear 404)."""
    before, after = running.defaults(), desired.defaults()
    return [f"the gateway keeps {before.get(t)!r} as its default {t} model (the file now says {after.get(t)!r}); "
            "restart 'up' to change it" for t in sorted(before.keys() | after.keys()) if before.get(t) != after.get(t)]


def identity(child: Child) -> tuple[list[str], dict[str, str]]:
    """What makes a worker process what it is, minus where it listens and its id."""
    argv = list(child.argv)
    for flag in ("--port", "--advertise-url"):
        i = argv.index(flag)
        argv[i + 1] = ""
    return argv, {k: v for k, v in child.env.items() if k != "WORKER_ID"}


def diff(running: list[Child], desired: list[Child]) -> list[Step]:
    """Starts, then replacements, then stops (the rolling order; see the module docstring)."""
    have = {(c.model, c.replica): c for c in running}
    want = {(c.model, c.replica): c for c in desired}
    starts = [Step("start", m, r, "new replica") for (m, r) in want if (m, r) not in have]
    replaces = [Step("replace", m, r, _why(have[m, r], c)) for (m, r), c in want.items()
                if (m, r) in have and identity(have[m, r]) != identity(c)]
    stops = [Step("stop", m, r, "not in the file") for (m, r) in have if (m, r) not in want]
    return starts + replaces + stops


def _why(old: Child, new: Child) -> str:
    old_argv, old_env = identity(old)
    new_argv, new_env = identity(new)
    changed = sorted(k for k in old_env.keys() | new_env.keys() if old_env.get(k) != new_env.get(k))
    if "--model-revision" in old_argv and "--model-revision" in new_argv:
        before, after = (a[a.index("--model-revision") + 1] for a in (old_argv, new_argv))
        if before != after:
            changed.insert(0, f"revision {before} -> {after}")
    if old_argv != new_argv and not changed:
        changed.append("engine or placement")
    return ", ".join(changed) or "changed"


class Rollout:
    """One apply against a running :class:`LocalStack` (which serialises them)."""

    def __init__(self, stack: LocalStack, desired: Deployment, say: Say) -> None:
        self.stack = stack
        self.desired = desired
        self.say = say

    def plan(self) -> tuple[list[Step], dict[tuple[str | None, int | None], Child]]:
        refused = restart_only_changes(self.stack.options.deployment, self.desired)
        if refused:
            raise ApplyRefused("this needs a restart of 'up': " + "; ".join(refused))
        d = self.desired
        revisions = ensure_in_store(d) if any(m.engine != "fake" for m in d.models) else {}
        gpus = local_gpu_assignment(d)
        planned = Planner(d, revisions, self.stack.options.log_level, gpus).workers()
        return diff(self.stack.workers(), planned), {(c.model, c.replica): c for c in planned}

    def run(self) -> bool:
        steps, planned = self.plan()
        self.say({"event": "plan", "steps": [s.view() for s in steps],
                  "notes": notes(self.stack.options.deployment, self.desired)})
        for step in steps:
            key = (step.model, step.replica)
            old = next((c for c in self.stack.workers() if (c.model, c.replica) == key), None)
            if step.action in ("start", "replace") and not self._start_ready(step, planned[key]):
                return False
            if step.action in ("replace", "stop") and old is not None:
                self._drain(step, old)
        self.stack.options = replace(self.stack.options, deployment=self.desired)
        targets = self.desired.monitoring.prometheus_targets
        if targets is not None:
            write_prometheus_targets(self.desired, targets, [_port(c) for c in self.stack.workers()])
        return True

    def _start_ready(self, step: Step, planned: Child) -> bool:
        child = self._placed(planned)
        self.say({"event": "starting", **step.view(), "url": child.url, "id": child.env["WORKER_ID"]})
        self.stack.launch(child)
        problem = self._wait_usable(child)
        if problem is not None:
            self.stack.retire(child)
            _stop_now(child)
            self.say({"event": "failed", **step.view(), "error": problem})
            return False
        self.stack.promote(child)
        self.say({"event": "ready", **step.view(), "url": child.url})
        return True

    def _placed(self, planned: Child) -> Child:
        """The planned replica on its file port when that is free, else on a free port, with an id no
        running replica has (a replacement runs beside the replica it replaces)."""
        used = {_port(c) for c in self.stack.children}
        port = _port(planned)
        if port in used or port_problem(self.desired.host, port) is not None:
            port = any_free_port(self.desired.host)
        taken = {c.env.get("WORKER_ID") for c in self.stack.children}
        worker_id = base = planned.env["WORKER_ID"]
        for n in itertools.count(2):
            if worker_id not in taken:
                break
            worker_id = f"{base}-{n}"
        argv = list(planned.argv)
        argv[argv.index("--port") + 1] = str(port)
        argv[argv.index("--advertise-url") + 1] = f"http://{advertise_host(self.desired.host)}:{port}"
        return replace(planned, argv=argv, env={**planned.env, "WORKER_ID": worker_id},
                       url=f"http://{self.desired.host}:{port}", proc=None)

    def _wait_usable(self, child: Child) -> str | None:
        """None once the gateway lists the replica as usable (healthy, registered, followed)."""
        gateway = self.stack.gateway()
        deadline = time.monotonic() + self.stack.options.ready_timeout
        with httpx.Client(timeout=2.0, headers=self.stack.admin_headers()) as client:
            while time.monotonic() < deadline:
                if self.stack.stopping:
                    return "the stack is stopping"
                if child.proc is not None and child.proc.poll() is not None:
                    return f"{child.name} exited with code {child.proc.returncode} during start-up"
                try:
                    rows = client.get(f"{gateway.url}/services").json()["data"]
                    if any(r.get("service_id") == child.env["WORKER_ID"] and r.get("usable") for r in rows):
                        return None
                except (httpx.HTTPError, ValueError, KeyError, TypeError):
                    pass
                time.sleep(0.5)
        return f"not usable within {self.stack.options.ready_timeout:.0f} s"

    def _drain(self, step: Step, old: Child) -> None:
        self.say({"event": "draining", **step.view(), "url": old.url})
        self.stack.retire(old)
        timeout = WorkerSettings.model_fields["drain_timeout_s"].default
        timeout = float(old.env.get("WORKER_DRAIN_TIMEOUT_S", timeout)) + EXIT_GRACE_S
        if old.proc is not None and old.proc.poll() is None:
            os.kill(old.proc.pid, signal.SIGTERM)  # the worker alone: it drains, then stops its engine
            try:
                old.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _stop_now(old)
        self.say({"event": "stopped", **step.view(), "url": old.url})


def _stop_now(child: Child) -> None:
    if child.proc is None or child.proc.poll() is not None:
        return
    try:
        os.killpg(child.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.proc.wait()


def _port(child: Child) -> int:
    return int(child.argv[child.argv.index("--port") + 1])
