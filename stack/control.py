"""The running ``up``'s control endpoint: how ``apply`` and ``models alias --rollout`` reach it.

``up`` owns its children, so a live change is handed to it rather than done beside it: ``up`` serves
this small app on a loopback port of its own choosing (never reachable from another machine) and
writes where to find it into its run folder, keyed by the gateway port (``find_control``). Callers
authenticate like the admin API (the admin key when ``MODEL_SERVICE_AUTH`` is on).

- ``POST /apply`` takes a deployment file's text, checks it exactly as ``up`` does (one error per
  problem; nothing changes on a bad file) and streams the plan and progress as JSON lines.
- ``POST /rollout`` applies the running file again, so a ``store:`` source that names an alias which
  now points elsewhere moves its replicas to the new revision, one at a time.
- ``GET /status``: the running workers.
- ``GET /deployment``: the running deployment as file text (the text last applied or started from when it
  still describes what runs; otherwise rendered from what runs, e.g. with ``up``'s flags on top) and the
  running workers: what the console edits and applies again.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
import yaml
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from common.auth import Authenticator, AuthSettings, Role, require
from common.errors import APIError, InvalidRequestError, install_error_handlers
from common.settings import service_home
from stack.deployment_file import DeploymentFileError, parse_deployment
from stack.rollout import ApplyRefused, Event, Rollout

if TYPE_CHECKING:
    from stack.deployment import Deployment
    from stack.up import LocalStack


class BusyError(APIError):
    """One apply at a time: a second one while the first rolls would plan against a moving stack."""

    status, type, code = 409, "invalid_request_error", "apply_in_progress"


class ApplyRequest(BaseModel):
    text: str
    source: str = "<deployment>"


router = APIRouter()


def _stack(request: Request) -> LocalStack:
    return request.app.state.stack


@router.get("/status")
def status(request: Request) -> dict[str, Any]:
    return {"workers": [{"model": c.model, "replica": c.replica, "url": c.url, "id": c.env.get("WORKER_ID")}
                        for c in _stack(request).workers()]}


@router.get("/deployment")
def deployment(request: Request) -> dict[str, Any]:
    stack = _stack(request)
    return {"text": deployment_text(stack.options.deployment, stack.options.text), **status(request)}


def deployment_text(running: Deployment, text: str | None) -> str:
    """``text`` (comments and all) when it still parses to what runs, else YAML rendered from ``running``
    with the defaults left out, which applies back to no change."""
    if text is not None:
        try:
            if parse_deployment(text) == running:
                return text
        except DeploymentFileError:
            pass
    data = running.model_dump(mode="json", exclude_defaults=True)
    return yaml.safe_dump({"version": running.version, **data}, sort_keys=False, allow_unicode=True)


@router.post("/apply")
def apply(body: ApplyRequest, request: Request) -> StreamingResponse:
    try:
        desired = parse_deployment(body.text, body.source)
    except DeploymentFileError as exc:
        raise InvalidRequestError("the deployment file is not valid; nothing was changed:\n" + str(exc)) from exc
    return _run(_stack(request), desired, body.text)


@router.post("/rollout")
def rollout(request: Request) -> StreamingResponse:
    stack = _stack(request)
    return _run(stack, stack.options.deployment, stack.options.text)


def _run(stack: LocalStack, desired: Deployment, text: str | None) -> StreamingResponse:
    """Start the rollout in its own thread (one at a time) and stream its events as JSON lines."""
    if not stack.apply_lock.acquire(blocking=False):
        raise BusyError("another apply is still running on this stack; wait for it to finish")
    events: queue.Queue[Event | None] = queue.Queue()

    def work() -> None:
        try:
            ok = Rollout(stack, desired, events.put).run()
            if ok:
                stack.options = replace(stack.options, text=text)
            events.put({"event": "done", "ok": ok})
        except ApplyRefused as exc:
            events.put({"event": "done", "ok": False, "error": str(exc)})
        except Exception as exc:  # a store or machine problem: the caller hears it, up keeps running
            events.put({"event": "done", "ok": False, "error": f"{type(exc).__name__}: {exc}"})
        finally:
            stack.apply_lock.release()
            events.put(None)

    threading.Thread(target=work, name="apply", daemon=True).start()

    def lines() -> Iterator[bytes]:
        while (event := events.get()) is not None:
            yield json.dumps(event).encode() + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


def create_control_app(stack: LocalStack, auth: AuthSettings) -> FastAPI:
    app = FastAPI(title="model-service up control", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)
    app.state.authenticator = Authenticator(auth)
    app.state.stack = stack
    app.include_router(router, dependencies=[Depends(require(Role.ADMIN))])
    return app


class ControlServer:
    """The control app on a free loopback port, in a thread beside ``up``'s supervision loop."""

    def __init__(self, app: FastAPI, gateway_port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="control", daemon=True)
        self.pointer = control_pointer(gateway_port)

    def start(self) -> None:
        self.thread.start()
        self.pointer.parent.mkdir(parents=True, exist_ok=True)
        self.pointer.write_text(json.dumps({"url": self.url}))

    def stop(self) -> None:
        self.pointer.unlink(missing_ok=True)
        self.server.should_exit = True
        self.thread.join(timeout=5)
        self.sock.close()


def control_pointer(gateway_port: int) -> Path:
    return service_home() / "run" / f"up-{gateway_port}.json"


def find_control(gateway_port: int) -> str | None:
    """The control URL of the ``up`` whose gateway listens on ``gateway_port``, if one runs."""
    try:
        return str(json.loads(control_pointer(gateway_port).read_text())["url"])
    except (OSError, ValueError, KeyError):
        return None
