"""The client side of live changes: ``model-service apply FILE`` and ``models alias ... --rollout``.

Both talk to the running ``up``'s control endpoint (stack/control.py), found through the pointer
``up`` leaves in its run folder for its gateway port, or given with ``--control URL``. The file is
checked here first with the same loader as ``up``, so a bad file is reported (one line per problem)
without reaching the stack; the stack checks it again, since it acts on what it receives. Progress
arrives as JSON lines and is printed as it happens: the plan first, then each replica's start,
readiness, drain and stop.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx

from common.auth import AuthSettings
from stack.control import find_control
from stack.deployment_file import DeploymentFileError, load_deployment

# An apply waits for models to load and replicas to drain: no read timeout on the progress stream.
TIMEOUT = httpx.Timeout(10.0, read=None)


def apply_file(path: str, control: str | None) -> int:
    try:
        deployment = load_deployment(path)
    except DeploymentFileError as exc:
        print(f"error: the deployment file is not valid; nothing was changed:\n{exc}", file=sys.stderr)
        return 2
    url = control or _found(deployment.ports.gateway)
    if url is None:
        return 1
    body = {"text": Path(path).read_text(encoding="utf-8"), "source": str(path)}
    return _stream(f"{url}/apply", body)


def rollout(gateway_port: int, control: str | None) -> int:
    """Re-apply the running file: replicas whose ``store:`` alias now names another revision move to it."""
    url = control or _found(gateway_port)
    return 1 if url is None else _stream(f"{url}/rollout", None)


def _found(gateway_port: int) -> str | None:
    url = find_control(gateway_port)
    if url is None:
        print(f"error: no running 'model-service up' with its gateway on port {gateway_port} was found on "
              "this machine (give --control URL, or start it with 'model-service up')", file=sys.stderr)
    return url


def _stream(url: str, body: dict[str, Any] | None) -> int:
    auth = AuthSettings()
    headers = {}
    if auth.auth and auth.admin_key is not None:
        headers["authorization"] = f"Bearer {auth.admin_key.get_secret_value()}"
    ok = False
    try:
        with httpx.Client(timeout=TIMEOUT, headers=headers) as client, \
                client.stream("POST", url, json=body) as response:
            if response.status_code >= 400:
                response.read()
                print(f"error: {_message(response)}", file=sys.stderr)
                return 2 if response.status_code in (400, 422) else 1
            for line in response.iter_lines():
                if line.strip():
                    ok = _show(json.loads(line)) or ok
    except httpx.HTTPError as exc:
        print(f"error: the stack's control endpoint {url} did not answer: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


def _show(event: dict[str, Any]) -> bool:
    """Print one progress event; True for the final event of a successful apply."""
    kind = event["event"]
    if kind == "plan":
        steps = event["steps"]
        print("Plan: nothing to change." if not steps else f"Plan ({len(steps)} step(s)):")
        for s in steps:
            print(f"  {s['action']:<8} {s['model']} replica {s['replica']}  ({s['why']})")
        for note in event.get("notes", []):
            print(f"note: {note}")
    elif kind == "done":
        if event.get("ok"):
            print("Applied.")
        else:
            print(f"error: {event.get('error') or 'the apply stopped; the replicas already running keep serving'}",
                  file=sys.stderr)
        return bool(event.get("ok"))
    else:
        where = event.get("url", "")
        extra = f": {event['error']}" if "error" in event else ""
        print(f"  {kind:<8} {event['model']} replica {event['replica']} {where}{extra}", flush=True)
    return False


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:500]
