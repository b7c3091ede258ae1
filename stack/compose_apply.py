"""``model-service apply FILE --compose OUT``: the same live change for a compose deployment.

Compose owns the containers, so this renders the changed file (``render compose``), compares it with
the rendering the site runs now (``OUT`` as it was), writes the new one and asks compose to converge
service by service, in the rolling order ``apply`` uses for the local stack: new replicas first (each
waited on until healthy), then each changed replica alone, then the other changed services, and last
the services the file no longer has (``--remove-orphans``). Every replica is its own service, so
recreating one leaves its siblings serving; compose stops the old container with SIGTERM, which a
worker turns into a drain (model_service/drain.py). Unlike the local stack, compose stops a changed
service before its new container starts: a model with a single replica pauses while it is
recreated, so keep two where that matters.

``recreate=True`` (``--recreate``, a revision rollout or rollback for compose, after ``models alias``):
recreate every replica even when the rendering is unchanged, so workers that load an alias fetch what
it names now. The compose command is ``docker compose`` unless ``--compose-cmd`` says otherwise.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from stack.deployment_file import DeploymentFileError, load_deployment
from stack.render import load_template, render_compose

Command = list[str]


def is_worker(service: dict[str, Any]) -> bool:
    return "WORKER_ID" in (service.get("environment") or {})


def compose_steps(old: dict[str, Any] | None, new: dict[str, Any], recreate: bool = False) -> list[Command]:
    """The compose subcommands that take a site from ``old`` (None: nothing runs yet) to ``new``."""
    if old is None:  # a first deployment: compose starts everything in dependency order
        return [["up", "-d", "--wait"]]
    before = old.get("services", {})
    after = new["services"]
    workers = [name for name, service in after.items() if is_worker(service)]
    added = [name for name in workers if name not in before]
    changed = [name for name in workers if name in before and (recreate or before[name] != after[name])]
    others = [name for name, service in after.items()
              if not is_worker(service) and before.get(name) != service]
    steps = [["up", "-d", "--no-deps", "--wait", name] for name in added]
    steps += [["up", "-d", "--no-deps", "--wait", "--force-recreate", name] for name in changed]
    if others:
        steps.append(["up", "-d", "--wait", *others])
    if set(before) - set(after):
        steps.append(["up", "-d", "--no-recreate", "--remove-orphans"])
    return steps


def apply_compose(path: str, output: str, compose_cmd: str = "docker compose", recreate: bool = False) -> int:
    try:
        deployment = load_deployment(path)
    except DeploymentFileError as exc:
        print(f"error: the deployment file is not valid; nothing was changed:\n{exc}", file=sys.stderr)
        return 2
    out = Path(output)
    text = render_compose(deployment, load_template(), Path(path).name)
    old = yaml.safe_load(out.read_text(encoding="utf-8")) if out.is_file() else None
    steps = compose_steps(old, yaml.safe_load(text), recreate)
    out.write_text(text, encoding="utf-8")
    base = [*shlex.split(compose_cmd), "-f", str(out)]
    print(f"Plan ({len(steps)} step(s)):" if steps else "Plan: nothing to change.")
    for step in steps:
        print(f"  {shlex.join(base + step)}", flush=True)
    for step in steps:
        done = subprocess.run(base + step, check=False)
        if done.returncode != 0:
            print(f"error: {shlex.join(base + step)} exited with {done.returncode}; the services already "
                  f"changed keep running", file=sys.stderr)
            return 1
    print("Applied.")
    return 0
