"""``model-service render helm-values``: the chart's ``models:`` list from a deployment file. Ports become
pod addresses, GPU lists become counts per replica, limits and engine arguments become WORKER_* env;
every entry fits the chart's values schema, and the 4-GPU example's models are what the command renders."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from stack.cli import main
from stack.deployment import Deployment
from stack.deployment_file import load_deployment
from stack.render_helm import helm_models, k8s_name

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "model-service"
CHAT_REPLICAS = ROOT / "deploy" / "examples" / "chat-replicas.yaml"


def _model_schema() -> dict:
    schema = json.loads((CHART / "values.schema.json").read_text())
    return {**schema["$defs"]["model"], "$defs": schema["$defs"]}


def test_models_from_the_compose_example():
    models = helm_models(load_deployment(CHAT_REPLICAS))
    assert models == [
        {"name": "smollm2-135m-instruct", "id": "HuggingFaceTB/SmolLM2-135M-Instruct", "type": "llm",
         "engine": "auto", "revision": "current", "replicas": 2, "gpus": 1, "device": "auto", "default": True,
         "env": {"WORKER_MAX_QUEUE": "32", "WORKER_MAX_BATCH_SIZE": "16"}},
        {"name": "minilm", "id": "sentence-transformers/all-MiniLM-L6-v2", "servedName": "minilm",
         "type": "embedding", "engine": "auto", "revision": "current", "replicas": 1, "gpus": 0, "device": "cpu",
         "default": True},
    ]
    for model in models:
        jsonschema.validate(model, _model_schema())


def test_committed_gpu_example_matches_its_deployment_file(tmp_path):
    """Render again with: model-service render helm-values examples/gpu-4.deployment.yaml (models: part)."""
    out = tmp_path / "values.yaml"
    assert main(["render", "helm-values", str(CHART / "examples" / "gpu-4.deployment.yaml"), "-o", str(out)]) == 0
    committed = yaml.safe_load((CHART / "examples" / "gpu-4.yaml").read_text())
    assert yaml.safe_load(out.read_text())["models"] == committed["models"]
    assert sum(m["replicas"] * m["gpus"] for m in committed["models"]) == 4


def test_names_are_dns_labels_and_unique():
    d = Deployment.model_validate({"models": [
        {"id": "org1/Some_Model.v2", "type": "llm", "source": {"store": "v1"}, "placement": {"gpu_count": 2}},
        {"id": "org2/some-model-v2", "type": "llm", "source": {"store": "current"}, "placement": "gpu"},
        {"id": "x/" + "very-long-name-" * 4, "type": "embedding", "source": {"store": "current"}},
        {"id": "acme/Gateway", "type": "rerank", "source": {"store": "current"}},
    ]})
    models = helm_models(d)
    assert [m["name"] for m in models] == ["some-model-v2", "some-model-v2-m1", k8s_name("very-long-name-" * 4),
                                           "gateway-model"]  # never a platform component's name
    assert [(m["revision"], m["gpus"]) for m in models] == [("v1", 2), ("current", 1), ("current", 0), ("current", 0)]
    for model in models:
        jsonschema.validate(model, _model_schema())


def test_an_invalid_file_renders_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nmodels:\n  - id: a\n    type: llm\n    source: {store: current}\n    replica: 2\n")
    out = tmp_path / "values.yaml"
    assert main(["render", "helm-values", str(bad), "-o", str(out)]) == 2
    assert not out.exists()
    assert "replica" in capsys.readouterr().err
