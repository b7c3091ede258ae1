"""The ``model-service`` command: one entry point for every service and the embedded stack.

Service subcommands build the service's settings once, from their flags on top of the environment
and ``.env`` (a flag wins; a flag left out leaves the environment's value), and serve the app made
from those settings, so a flag, an env var and a ``.env`` line all mean the same thing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from gateway.keys_cli import add_keys_commands
from model_registry.cli import add_models_commands
from model_service.engines import ENGINES
from stack.starters import STARTER_EMBEDDING, STARTER_LLM

if TYPE_CHECKING:
    from fastapi import FastAPI

    from stack.deployment import Deployment


def _given(**flags: Any) -> dict[str, Any]:
    """The flags the user gave; the others stay unset so the environment's values apply."""
    return {name: value for name, value in flags.items() if value is not None}


def _serve(app: FastAPI, args: argparse.Namespace, *, drain: bool = False) -> int:
    """``drain``: a worker, whose first SIGTERM drains before it stops (model_service/drain.py)."""
    import uvicorn

    if not drain:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
        return 0
    from model_service.drain import DrainingServer

    DrainingServer(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level), app).run()
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from model_service.app import create_app
    from model_service.settings import WorkerSettings

    settings = WorkerSettings(**_given(
        model_name=args.model_name, model_type=args.model_type, model_path=args.model_path,
        model_source=args.model_source, model_revision=args.model_revision, engine=args.engine,
        registry_url=args.registry_url, advertise_url=args.advertise_url, device=args.device,
        host=args.host, port=args.port,
    ))
    return _serve(create_app(settings), args, drain=True)


def _cmd_gateway(args: argparse.Namespace) -> int:
    from gateway.app import create_app
    from gateway.settings import GatewaySettings

    settings = GatewaySettings(**_given(
        workers=args.workers, registry_url=args.registry_url, default_chat_model=args.default_chat_model,
        default_embedding_model=args.default_embedding_model,
        default_transcription_model=args.default_transcription_model,
        default_multimodal_model=args.default_multimodal_model, default_rerank_model=args.default_rerank_model,
        host=args.host, port=args.port,
    ))
    return _serve(create_app(settings), args)


def _cmd_service_registry(args: argparse.Namespace) -> int:
    from service_registry.app import create_app
    from service_registry.settings import RegistrySettings

    return _serve(create_app(RegistrySettings(host=args.host, port=args.port)), args)


def _cmd_model_registry(args: argparse.Namespace) -> int:
    from model_registry.app import create_app
    from model_registry.settings import ModelRegistrySettings

    return _serve(create_app(ModelRegistrySettings(host=args.host, port=args.port)), args)


def _cmd_up(args: argparse.Namespace) -> int:
    from stack.deployment_file import STARTER_FILE, DeploymentFileError, load_deployment
    from stack.up import LocalStack, StackOptions

    path = Path(args.deployment or STARTER_FILE)
    try:
        deployment = _with_flags(load_deployment(path), args)
    except DeploymentFileError as exc:
        print(f"error: the deployment file is not valid; nothing was started:\n{exc}", file=sys.stderr)
        return 2
    text = path.read_text(encoding="utf-8")
    return LocalStack(StackOptions(deployment, args.ready_timeout, args.log_level, text)).run()


def _with_flags(deployment: Deployment, args: argparse.Namespace) -> Deployment:
    """The file with ``up``'s flags on top: global ports and host, the starter models' ports (or none of
    them), and ``--engine fake``; checked again, since a flag can clash with the file."""
    from stack.deployment import Deployment, problems
    from stack.deployment_file import DeploymentFileError

    data = deployment.model_dump(exclude_none=False)
    data["host"] = args.host or data["host"]
    for key, value in (("gateway", args.gateway_port), ("service_registry", args.registry_port),
                       ("model_registry", args.model_registry_port)):
        data["ports"][key] = value or data["ports"][key]
    if args.no_model_registry:
        data["ports"]["model_registry"] = None
    dropped = {kind for kind in ("llm", "embedding", "transcription") if getattr(args, f"no_{kind}")}
    data["models"] = [m for m in data["models"] if (m["source"].get("starter") or "") not in dropped]
    for m in data["models"]:
        port = getattr(args, f"{m['source'].get('starter')}_port", None)
        m["port"] = port or m["port"]
        m["engine"] = args.engine or m["engine"]
    try:
        changed = Deployment.model_validate(data)
    except ValidationError as exc:
        raise DeploymentFileError("flags", [f"flags: {e['loc']}: {e['msg']}" for e in exc.errors()]) from exc
    found = problems(changed)
    if found:
        raise DeploymentFileError("flags", [f"with the command-line flags: {p.message}" for p in found])
    return changed


def _cmd_apply(args: argparse.Namespace) -> int:
    if args.compose:
        from stack.compose_apply import apply_compose

        return apply_compose(args.file, args.compose, args.compose_cmd, args.recreate)
    from stack.apply_client import apply_file

    return apply_file(args.file, args.control)


def _deployment_or_report(path: str) -> Deployment | None:
    """The file's deployment, or None after printing every problem to stderr."""
    from stack.deployment_file import DeploymentFileError, load_deployment

    try:
        return load_deployment(path)
    except DeploymentFileError as exc:
        print(exc, file=sys.stderr)
        return None


def _write_or_print(text: str, output: str | None) -> int:
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _cmd_deployment_check(args: argparse.Namespace) -> int:
    from stack.deployment import replica_ports

    deployment = _deployment_or_report(args.file)
    if deployment is None:
        return 2
    for _, model, replica, port in replica_ports(deployment):
        print(f"{model.name}\treplica {replica}\t{deployment.host}:{port}\t{model.source.kind}")
    return 0


def _cmd_render_compose(args: argparse.Namespace) -> int:
    from stack.render import render_files

    deployment = _deployment_or_report(args.file)
    if deployment is None:
        return 2
    wanted = {"prometheus_targets": args.prometheus_targets, "chatui_env": args.chatui_env,
              "chatui_compose": args.chatui_compose}
    texts = render_files(deployment, Path(args.file), [kind for kind, path in wanted.items() if path])
    for kind, path in wanted.items():
        if path:
            Path(path).write_text(texts[kind], encoding="utf-8")
    return _write_or_print(texts["compose"], args.output)


def _cmd_render_helm_values(args: argparse.Namespace) -> int:
    from stack.render_helm import render_helm_values

    deployment = _deployment_or_report(args.file)
    if deployment is None:
        return 2
    return _write_or_print(render_helm_values(deployment, Path(args.file).name), args.output)


def _cmd_deployment_schema(args: argparse.Namespace) -> int:
    from stack.deployment_file import schema_text

    return _write_or_print(schema_text(), args.output)


def _cmd_models_prepare(args: argparse.Namespace) -> int:
    from stack.starters import StarterModelError, prepare_all

    try:
        for model_id, path in prepare_all().items():
            print(f"{model_id}\t{path}")
    except StarterModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _add_common(p: argparse.ArgumentParser, default_port: int) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=default_port)
    p.add_argument("--log-level", default="info")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="model-service", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the stack a deployment file describes on this machine "
                                   "(default: the starter models)")
    up.add_argument("--deployment", "-f", default=None, metavar="FILE",
                    help="deployment file (default: the shipped starter file; docs/deployment-file.md)")
    up.add_argument("--host", default=None, help="address to bind (default: the file's host)")
    up.add_argument("--gateway-port", type=int, default=None, help="default: the file's ports.gateway")
    up.add_argument("--registry-port", type=int, default=None, help="service registry port")
    up.add_argument("--model-registry-port", type=int, default=None, help="model registry port")
    up.add_argument("--no-model-registry", action="store_true",
                    help="do not start the model registry server (the workers still load from the store)")
    for kind, what in (("llm", "chat"), ("embedding", "embedding"), ("transcription", "speech-to-text")):
        up.add_argument(f"--{kind}-port", type=int, default=None, help=f"port of the {kind} starter model")
        up.add_argument(f"--no-{kind}", action="store_true", help=f"do not start the {what} starter model")
    up.add_argument("--engine", choices=["fake"], default=None,
                    help="'fake' serves every model with the in-package fake engine (no model files needed)")
    up.add_argument("--ready-timeout", type=float, default=600.0, help="seconds to wait for readiness")
    up.add_argument("--log-level", default="warning", help="log level of the child services")
    up.set_defaults(func=_cmd_up)

    apply = sub.add_parser("apply", help="change the running 'up' to match FILE, rolling, without failing "
                                         "a request (docs/deployment-file.md#apply)")
    apply.add_argument("file")
    apply.add_argument("--control", default=None, metavar="URL",
                       help="the stack's control URL (default: found from the file's gateway port)")
    apply.add_argument("--compose", default=None, metavar="OUT",
                       help="a compose deployment instead: render FILE to OUT and converge it replica by replica")
    apply.add_argument("--compose-cmd", default="docker compose", help="with --compose: the compose command")
    apply.add_argument("--recreate", action="store_true",
                       help="with --compose: recreate every worker (a store alias now names another revision)")
    apply.set_defaults(func=_cmd_apply)

    worker = sub.add_parser("worker", help="run one model worker")
    _add_common(worker, 8000)
    worker.add_argument("--model-name", default=None, help="served name (default: MODEL_NAME)")
    worker.add_argument("--model-type", default=None,
                        choices=["llm", "embedding", "multimodal", "transcription", "rerank"],
                        help="default: MODEL_TYPE")
    worker.add_argument("--model-path", default=None, help="model folder (default: MODEL_PATH)")
    worker.add_argument("--model-source", default=None, choices=["path", "store"],
                        help="'store': fetch MODEL_NAME from the model store (MODEL_REGISTRY_*/MINIO_*), "
                             "verify sha256, load offline (default: path)")
    worker.add_argument("--model-revision", default=None,
                        help="revision or alias to fetch with --model-source store (default: current)")
    worker.add_argument("--engine", default=None, choices=["auto", *ENGINES],
                        help="'auto': the usual engine for the model type (default)")
    worker.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N")
    worker.add_argument("--registry-url", default=None,
                        help="service registry to register with, e.g. http://127.0.0.1:8070")
    worker.add_argument("--advertise-url", default=None,
                        help="URL others reach this worker at (default: http://HOST:PORT)")
    worker.set_defaults(func=_cmd_worker)

    gateway = sub.add_parser("gateway", help="run the OpenAI-compatible gateway")
    _add_common(gateway, 8080)
    gateway.add_argument("--workers", default=None, help="comma-separated worker base URLs")
    gateway.add_argument("--registry-url", default=None,
                         help="service registry to follow, e.g. http://127.0.0.1:8070 (with or instead of --workers)")
    gateway.add_argument("--default-chat-model", default=None)
    gateway.add_argument("--default-embedding-model", default=None)
    gateway.add_argument("--default-transcription-model", default=None)
    gateway.add_argument("--default-multimodal-model", default=None)
    gateway.add_argument("--default-rerank-model", default=None)
    gateway.set_defaults(func=_cmd_gateway)

    service_registry = sub.add_parser("service-registry", help="run the service registry (REGISTRY_* settings)")
    _add_common(service_registry, 8070)
    service_registry.set_defaults(func=_cmd_service_registry)

    model_registry = sub.add_parser("model-registry", help="run the model registry (MODEL_REGISTRY_* settings)")
    _add_common(model_registry, 8090)
    model_registry.set_defaults(func=_cmd_model_registry)

    models = sub.add_parser("models", help="manage model files")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    prep = models_sub.add_parser(
        "prepare-starters",
        help=f"convert/cache the starter models ({STARTER_LLM.model_id}, {STARTER_EMBEDDING.model_id})",
    )
    prep.set_defaults(func=_cmd_models_prepare)
    add_models_commands(models_sub)

    add_keys_commands(sub)

    deployment = sub.add_parser("deployment", help="check a deployment file, or print its JSON Schema")
    deployment_sub = deployment.add_subparsers(dest="deployment_command", required=True)
    check = deployment_sub.add_parser("check", help="validate FILE and list the workers it starts")
    check.add_argument("file")
    check.set_defaults(func=_cmd_deployment_check)
    schema = deployment_sub.add_parser("schema", help="the deployment file's JSON Schema")
    schema.add_argument("--output", "-o", default=None, help="write it here instead of stdout")
    schema.set_defaults(func=_cmd_deployment_schema)

    render = sub.add_parser("render", help="render a deployment file for another launcher")
    render_sub = render.add_subparsers(dest="render_command", required=True)
    compose = render_sub.add_parser("compose", help="a compose file with one service per replica")
    compose.add_argument("file")
    compose.add_argument("--output", "-o", default=None, help="write it here instead of stdout")
    compose.add_argument("--prometheus-targets", default=None,
                         help="also write the workers' Prometheus file_sd targets here")
    compose.add_argument("--chatui-env", default=None, help="also write Chat UI's env template (MODELS) here")
    compose.add_argument("--chatui-compose", default=None, help="also write the Chat UI compose file here")
    compose.set_defaults(func=_cmd_render_compose)
    helm_values = render_sub.add_parser("helm-values", help="the Helm chart's models: values (deploy/helm)")
    helm_values.add_argument("file")
    helm_values.add_argument("--output", "-o", default=None, help="write it here instead of stdout")
    helm_values.set_defaults(func=_cmd_render_helm_values)

    bench = sub.add_parser("bench", help="throughput benchmark (scripts/bench.py; pass its flags after --)")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_cmd_bench)
    return parser


def _cmd_bench(args: argparse.Namespace) -> int:
    """Run ``scripts/bench.py`` from a source checkout (the harness is not part of the wheel)."""
    import runpy

    script = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"
    if not script.is_file():
        print(f"bench needs a source checkout: {script} not found", file=sys.stderr)
        return 2
    sys.argv = [str(script), *[a for a in args.bench_args if a != "--"]]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
