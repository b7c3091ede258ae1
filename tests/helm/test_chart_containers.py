"""Every platform container the chart renders, read the way the process reads it: its command through
``model-service``'s own argument parser, its environment through the services' own pydantic-settings
classes. A renamed flag, a renamed variable or a URL that names no Service fails here, not on a cluster.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from common.auth import AuthSettings
from common.settings import deployment_env, service_home
from gateway.settings import GatewaySettings
from model_registry.settings import ModelRegistrySettings
from model_service.settings import WorkerSettings
from service_registry.settings import RegistrySettings
from stack.cli import build_parser
from tests.helpers.helm import EXAMPLES, POD_FIELDS, by_kind, containers, resolved_env

pytestmark = pytest.mark.e2e  # renders the chart with helm

# The settings each command builds from its environment.
SETTINGS: dict[tuple[str, ...], tuple[type[BaseSettings], ...]] = {
    ("worker",): (WorkerSettings, AuthSettings, ModelRegistrySettings),
    ("gateway",): (GatewaySettings, AuthSettings),
    ("service-registry",): (RegistrySettings, AuthSettings),
    ("model-registry",): (ModelRegistrySettings, AuthSettings),
    ("models", "fetch"): (ModelRegistrySettings,),
}
# Read outside the settings classes: by the function named, checked by behaviour below.
PROCESS_ENV = {"MODEL_SERVICE_ENV", "MODEL_SERVICE_HOME", "HOME",
               "HF_HUB_OFFLINE"}  # huggingface_hub's own switch: the model registry mirrors through it
DOWNWARD_API = {"POD_IP", "POD_NAME"}  # only as $(POD_IP) / $(POD_NAME) in the variables after them
# Issue 19 item 2 adds the gateway's shared-state setting under this name; until GatewaySettings has
# the field it is accepted by name, afterwards it must parse like every other variable.
PENDING = {"GATEWAY_REDIS_URL": ("redis_url", GatewaySettings)}
CLEARED = ("GATEWAY_", "WORKER_", "REGISTRY_", "MODEL_REGISTRY_", "MINIO_", "MODEL_SERVICE_", "MODEL_", "HF_")


def env_names(cls: type[BaseSettings]) -> set[str]:
    """Every environment variable a settings class reads (its prefix + field, or the field's aliases)."""
    prefix = cls.model_config.get("env_prefix", "")
    names = set()
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {c.upper() for c in alias.choices if isinstance(c, str)}
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def secret_values(docs: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """A strong, distinct value for every Secret key a container may reference (chart-made or the site's)."""
    refs = {(ref["name"], ref["key"]) for _, c, _ in containers(docs) for e in c.get("env", [])
            if (ref := e.get("valueFrom", {}).get("secretKeyRef"))}
    return {ref: hashlib.sha256("/".join(ref).encode()).hexdigest()[:40] for ref in refs}


def service_ports(docs: list[dict[str, Any]]) -> dict[str, set[int]]:
    return {s["metadata"]["name"]: {p["port"] for p in s["spec"]["ports"]} for s in by_kind(docs, "Service")}


def assert_names_a_service(url: str, docs: list[dict[str, Any]]) -> None:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    services = service_ports(docs)
    assert parts.hostname in services, f"{url}: no Service {parts.hostname} in the chart"
    assert parts.port in services[parts.hostname], f"{url}: Service {parts.hostname} has no port {parts.port}"


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No platform variable from this machine, and no ``.env`` file in the working folder."""
    for name in list(os.environ):
        if name.startswith(CLEARED):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def read_container(container: dict[str, Any], env: dict[str, str], mp: pytest.MonkeyPatch) -> dict[str, Any]:
    """Parse the command, check every variable is one the command reads, build its settings."""
    command = container["command"]
    assert command[0] == "model-service", command
    args = build_parser().parse_args(command[1:])  # argparse exits (SystemExit) on an unknown flag
    key = (args.command, args.models_command) if args.command == "models" else (args.command,)
    assert key in SETTINGS, f"{container['name']}: unexpected command {command}"
    known = set().union(*(env_names(cls) for cls in SETTINGS[key])) | PROCESS_ENV | DOWNWARD_API
    for name in env:
        pending = PENDING.get(name)
        if pending and pending[0] not in pending[1].model_fields:
            continue
        assert name in known, f"{container['name']} ({' '.join(command[1:3])}): {name} is read by nothing"
    for name in DOWNWARD_API & env.keys():
        assert any(f"$({name})" in str(e.get("value", "")) for e in container["env"]), f"{name} is never used"
    for name, value in env.items():
        mp.setenv(name, value)
    assert service_home() == Path("/data") and deployment_env() in ("production", "dev")
    return {"args": args, "key": key, **{cls.__name__: cls() for cls in SETTINGS[key]}}


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_every_container_reads_its_command_and_environment(
        example: str, manifests: dict[str, list[dict[str, Any]]], clean_env: pytest.MonkeyPatch) -> None:
    docs = manifests[example]
    secrets = secret_values(docs)
    seen: dict[tuple[str, ...], int] = {}
    for workload, container, _ in containers(docs):
        if not container["image"].startswith("model-service"):
            continue  # MinIO, mc, Valkey: their own images
        with clean_env.context() as mp:
            read = read_container(container, resolved_env(container, secrets), mp)
        seen[read["key"]] = seen.get(read["key"], 0) + 1
        _check_meaning(read, workload, container, docs)
    assert set(seen) == set(SETTINGS), f"{example}: commands rendered {sorted(seen)}"
    models = [d for d in by_kind(docs, "Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"]
              == "worker"]
    assert seen[("worker",)] == seen[("models", "fetch")] == len(models) > 0


def _check_meaning(read: dict[str, Any], workload: dict[str, Any], container: dict[str, Any],
                   docs: list[dict[str, Any]]) -> None:
    """What the parsed settings must say for the pods to find each other."""
    args = read["args"]
    if "ModelRegistrySettings" in read:
        store: ModelRegistrySettings = read["ModelRegistrySettings"]
        assert store.storage_backend == "s3" and store.s3_access_key and store.s3_secret_key
        if store.s3_endpoint.endswith(":9000") and "://" not in store.s3_endpoint:
            assert_names_a_service(store.s3_endpoint, docs)  # the in-chart MinIO
    if "AuthSettings" in read:
        assert read["AuthSettings"].auth is True  # every example keeps keys on
    if read["key"] != ("models", "fetch"):
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert args.host == "0.0.0.0" and args.port == ports["http"]
        assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    if read["key"] == ("worker",):
        _check_worker(read["WorkerSettings"], args, workload, docs)
    if read["key"] == ("gateway",):
        gateway: GatewaySettings = read["GatewaySettings"]
        assert gateway.registry_url is not None
        assert_names_a_service(gateway.registry_url, docs)
        if gateway.model_registry_url:
            assert_names_a_service(gateway.model_registry_url, docs)
        given = {e["name"]: e.get("value") for e in container["env"]}.get("GATEWAY_REDIS_URL")
        if given and "redis_url" in GatewaySettings.model_fields:
            assert str(gateway.model_dump()["redis_url"]) == given


def _check_worker(worker: WorkerSettings, args: Any, workload: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    assert worker.model_source == "store"
    assert worker.advertise_url == f"http://{POD_FIELDS['status.podIP']}:{args.port}"
    assert worker.worker_id == POD_FIELDS["metadata.name"]
    assert worker.registry_url is not None
    assert_names_a_service(worker.registry_url, docs)
    # The init step fetched exactly what this worker will look for, where it will look.
    (init,) = workload["spec"]["template"]["spec"]["initContainers"]
    fetch = build_parser().parse_args(init["command"][1:])
    assert fetch.id == (worker.store_model_id or worker.model_name)
    assert fetch.revision == worker.model_revision
    assert Path(fetch.cache_dir) == worker.cache_dir
