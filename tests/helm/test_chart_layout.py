"""What the chart promises beyond valid manifests: who may reach whom, GPUs and spreading, disruption
budgets, shared state for several gateways, and the Grafana dashboard kept in step with compose's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.helm import EXAMPLES, ROOT, by_kind, documents, helm_template

pytestmark = pytest.mark.e2e  # renders the chart with helm

Docs = dict[str, list[dict[str, Any]]]


def _component(doc: dict[str, Any]) -> str:
    return doc["metadata"]["labels"]["app.kubernetes.io/component"]


def _named(docs: list[dict[str, Any]], kind: str, component: str) -> list[dict[str, Any]]:
    return [d for d in by_kind(docs, kind) if _component(d) == component]


def _env(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}


@pytest.mark.parametrize("example", ["cpu-minimal", "gpu-4", "external-s3"])
def test_only_the_gateway_is_open_and_workers_hear_only_gateway_and_registry(example: str, manifests: Docs) -> None:
    docs = manifests[example]
    policies = {_component(p): p["spec"] for p in by_kind(docs, "NetworkPolicy")}
    pods = {_component(d) for d in by_kind(docs, "Deployment") + by_kind(docs, "Job")}
    assert pods <= set(policies), f"pods without a NetworkPolicy: {pods - set(policies)}"
    sources = {}
    for component, spec in policies.items():
        assert spec["policyTypes"] == ["Ingress"]
        rules = spec["ingress"]
        sources[component] = {s["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
                              for rule in rules for s in rule.get("from", []) if "podSelector" in s}
        if component != "gateway":
            assert all(rule.get("from") for rule in rules), f"{component} is open to every source"
    assert "from" not in policies["gateway"]["ingress"][0]  # clients reach the gateway (keys guard it)
    assert sources["worker"] == {"gateway", "service-registry"}
    assert sources["service-registry"] == {"gateway", "worker"}
    if "minio-init" in policies:
        assert policies["minio-init"]["ingress"] == []


def test_four_gpus_two_models_two_replicas_on_different_nodes(manifests: Docs) -> None:
    docs = manifests["gpu-4"]
    workers = _named(docs, "Deployment", "worker")
    assert len(workers) == 2
    gpus = 0
    for d in workers:
        pod = d["spec"]["template"]["spec"]
        (worker,) = pod["containers"]
        assert worker["resources"]["limits"]["nvidia.com/gpu"] == worker["resources"]["requests"]["nvidia.com/gpu"] == 1
        gpus += d["spec"]["replicas"] * worker["resources"]["limits"]["nvidia.com/gpu"]
        model = d["spec"]["selector"]["matchLabels"]["model-service/model"]
        (term,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["labelSelector"]["matchLabels"]["model-service/model"] == model
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        # A GPU is never requested twice during a rollout: one old replica goes before a new one comes.
        assert d["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert gpus == 4
    budgets = {p["spec"]["selector"]["matchLabels"].get("model-service/model"): p["spec"]
               for p in _named(docs, "PodDisruptionBudget", "worker")}
    assert set(budgets) == {w["spec"]["selector"]["matchLabels"]["model-service/model"] for w in workers}
    assert all(b == {**b, "maxUnavailable": 1} for b in budgets.values())


def test_several_gateways_share_the_in_chart_valkey(manifests: Docs) -> None:
    docs = manifests["gpu-4"]
    (gateway,) = _named(docs, "Deployment", "gateway")
    (valkey,) = _named(docs, "Service", "valkey")
    assert gateway["spec"]["replicas"] == 2
    assert _env(gateway)["GATEWAY_REDIS_URL"] == f"redis://{valkey['metadata']['name']}:6379/0"
    assert _named(docs, "PodDisruptionBudget", "gateway")
    assert _env(gateway)["GATEWAY_USAGE_LOG"] == "/data/gateway/usage-$(POD_NAME).log"  # one writer per file
    (store,) = _named(docs, "Deployment", "valkey")
    (image,) = {c["image"] for c in store["spec"]["template"]["spec"]["containers"]}
    assert image.startswith("valkey/valkey:") and not image.endswith(":latest")


def test_external_store_and_redis_replace_the_in_chart_ones(manifests: Docs) -> None:
    docs = manifests["external-s3"]
    assert not _named(docs, "Deployment", "minio") and not _named(docs, "Deployment", "valkey")
    (gateway,) = _named(docs, "Deployment", "gateway")
    assert "replicas" not in gateway["spec"]  # the HPA owns the count
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == gateway["metadata"]["name"]
    assert _env(gateway)["GATEWAY_REDIS_URL"] == "redis://redis.cache.svc.cluster.local:6379/0"
    assert not by_kind(docs, "Secret")  # every secret is the site's own


def test_single_gateway_keeps_in_process_state(manifests: Docs) -> None:
    (gateway,) = _named(manifests["cpu-minimal"], "Deployment", "gateway")
    assert gateway["spec"]["replicas"] == 1 and "GATEWAY_REDIS_URL" not in _env(gateway)
    # Its ReadWriteOnce volume can be mounted on one node at a time: no overlapping pods in a rollout.
    assert gateway["spec"]["strategy"] == {"type": "Recreate"}


def test_dashboard_configmap_is_the_compose_dashboard(manifests: Docs) -> None:
    (configmap,) = _named(manifests["cpu-minimal"], "ConfigMap", "dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((ROOT / "docker" / "grafana" / "dashboards" / "model-service.json").read_text())
    assert json.loads(configmap["data"]["model-service.json"]) == shipped


def test_service_monitors_select_services_with_a_metrics_port(tools: Path) -> None:
    """ServiceMonitor is a CRD, so no offline schema checks it: its selectors are checked here instead."""
    done = helm_template(tools, EXAMPLES["cpu-minimal"], sets=("monitoring.serviceMonitor.enabled=true",))
    assert done.returncode == 0, done.stderr
    docs = documents(done.stdout)
    monitors = by_kind(docs, "ServiceMonitor")
    assert {_component(m) for m in monitors} == {"gateway", "service-registry", "model-registry", "worker"}
    for monitor in monitors:
        wanted = monitor["spec"]["selector"]["matchLabels"]
        services = [s for s in by_kind(docs, "Service") if wanted.items() <= s["metadata"]["labels"].items()]
        assert services and all(any(p["name"] == "http" for p in s["spec"]["ports"]) for s in services)
        assert monitor["spec"]["endpoints"][0]["authorization"]["credentials"]["key"] == "service-token"
    (workers,) = [p for p in by_kind(docs, "NetworkPolicy") if _component(p) == "worker"]
    assert any("namespaceSelector" in s for s in workers["spec"]["ingress"][0]["from"])
