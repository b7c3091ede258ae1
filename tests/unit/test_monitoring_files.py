"""The monitoring profile's files agree with the services: the dashboard only queries metrics some service
exports, Prometheus scrapes the compose services where they listen, and the compose files validate."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

import pytest
import yaml
from prometheus_client.core import Metric

from gateway.metrics import GatewayMetrics
from model_registry.metrics import ModelRegistryMetrics
from model_service.metrics import WorkerMetrics
from service_registry.metrics import ServiceRegistryMetrics
from tests.helpers.deploy_files import ROOT, compose_config, expressions, rendered

DASHBOARD = ROOT / "docker/grafana/dashboards/model-service.json"
PROMETHEUS = ROOT / "docker/prometheus/prometheus.yml"
MONITORING = ["docker-compose.yml", "docker-compose.monitoring.yml"]
PREFIXES = ("gateway_", "worker_", "service_registry_", "model_registry_")
# A PromQL identifier that names a platform metric (label names never carry a service prefix).
METRIC_NAME = re.compile(rf"\b(?:{'|'.join(PREFIXES)})[a-zA-Z0-9_]+\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",),
            "summary": ("_sum", "_count", ""), "untyped": ("",)}


def series_names(families: Iterable[Metric]) -> set[str]:
    """Every series name the families can put in an exposition."""
    return {f.name + suffix for f in families for suffix in SUFFIXES.get(f.type, ("",))}


def exported() -> set[str]:
    """What the four services export, from their metrics classes (custom collectors by their describe,
    so GPU gauges count on a host without a GPU, and the model registry's state without a store)."""
    worker = WorkerMetrics("m")
    model_registry = ModelRegistryMetrics()
    families = [*worker.registry.collect(), *worker.gpu.describe(), *GatewayMetrics().registry.collect(),
                *ServiceRegistryMetrics().registry.collect(), *model_registry.registry.collect(),
                *model_registry.state.describe()]
    return series_names(families)


def test_dashboard_parses_and_queries_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]
    used = {name for expr in expressions(dashboard) for name in METRIC_NAME.findall(expr)}
    unknown = used - exported()
    assert not unknown, f"the dashboard queries metrics no service exports: {sorted(unknown)}"
    # Every service shows up, and the panels the monitoring brief asks for are there.
    assert {p for p in PREFIXES if any(n.startswith(p) for n in used)} == set(PREFIXES)
    for needed in ("gateway_requests_total", "gateway_request_duration_seconds_bucket",
                   "worker_time_to_first_token_seconds_bucket", "worker_prompt_tokens_total",
                   "worker_completion_tokens_total", "worker_queue_depth", "worker_in_flight_requests",
                   "service_registry_replica_healthy", "gateway_circuit_state", "worker_gpu_utilization_ratio",
                   "worker_gpu_memory_used_bytes", "worker_gpu_temperature_celsius", "model_registry_jobs"):
        assert needed in used, needed


def test_dashboard_panels_use_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    datasource = yaml.safe_load((ROOT / "docker/grafana/provisioning/datasources/prometheus.yml").read_text())
    [source] = datasource["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"
    variable = next(v for v in dashboard["templating"]["list"] if v["type"] == "datasource")
    assert variable["current"]["value"] == source["uid"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
    provider = yaml.safe_load((ROOT / "docker/grafana/provisioning/dashboards/model-service.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"


def container_ports() -> dict[str, set[int]]:
    """Each compose service's container ports, as the rendered standard stack (every profile) has them."""
    services = rendered(["docker-compose.yml"], "multimodal", "transcription")["services"]
    return {name: {int(p["target"]) for p in s.get("ports", [])} for name, s in services.items()}


def test_prometheus_scrapes_every_platform_service_with_the_token() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    ports = container_ports()
    targets = {t for job in config["scrape_configs"]
               for group in job.get("static_configs", []) for t in group["targets"]}
    for job in config["scrape_configs"]:  # the workers' rendered file_sd targets, in the mounted folder
        for sd in job.get("file_sd_configs", []):
            for path in sd["files"]:
                groups = json.loads((PROMETHEUS.parent / path.removeprefix("/etc/prometheus/")).read_text())
                targets |= {t for group in groups for t in group["targets"]}
    for target in targets:
        host, port = target.rsplit(":", 1)
        assert int(port) in ports.get(host, set()), f"{target} is not a compose service port"
    hosts = {t.rsplit(":", 1)[0] for t in targets}
    assert {"gateway", "service-registry", "model-registry", "llm", "tinyllama", "embedding", "multimodal",
            "transcription"} <= hosts
    assert "minio" not in hosts
    compose = yaml.safe_load((ROOT / "docker-compose.monitoring.yml").read_text())
    token_file = re.search(r"> (\S+service-token)", "\n".join(compose["services"]["prometheus"]["command"]))
    assert token_file, "the prometheus container writes no token file"
    for job in config["scrape_configs"]:
        assert job["authorization"] == {"type": "Bearer", "credentials_file": token_file.group(1)}, job["job_name"]
        assert job.get("metrics_path", "/metrics") == "/metrics"


@pytest.mark.parametrize("files", [MONITORING, ["docker-compose.gpu-cluster.yml", "docker-compose.monitoring.yml"]],
                         ids=["standard", "gpu-cluster"])
def test_monitoring_profile_validates(files: list[str]) -> None:
    result = compose_config(files, "--quiet", profiles=("monitoring",))
    assert result.returncode == 0, result.stderr


def test_monitoring_services_only_in_their_profile() -> None:
    plain = rendered(MONITORING)["services"]
    assert "prometheus" not in plain and "grafana" not in plain and "gateway" in plain
    services = rendered(MONITORING, "monitoring")["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    for service in (prometheus, grafana):
        assert service["profiles"] == ["monitoring"]
        image = service["image"]
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image
    assert prometheus["environment"]["MODEL_SERVICE_SERVICE_TOKEN"] is not None
    mounts = {v["target"]: v for v in prometheus["volumes"]}
    assert mounts["/etc/prometheus"]["source"] == str(ROOT / "docker/prometheus")
    assert {v["target"] for v in grafana["volumes"]} >= {"/etc/grafana/provisioning", "/etc/grafana/dashboards"}
    published = {int(p["published"]) for s in services.values() for p in s.get("ports", [])}
    assert len(published) == sum(len(s.get("ports", [])) for s in services.values()), "two services, one port"
