"""``model-service render compose``: one compose service per replica, each with its own id, advertise URL
and GPU; the shipped compose files, Prometheus targets and Chat UI files, and the committed example, equal
what the command renders from their deployment files."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from stack.cli import main
from stack.deployment_file import load_deployment
from stack.render import load_template, render_compose

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "examples" / "chat-replicas.yaml"
RENDERED = ROOT / "deploy" / "examples" / "chat-replicas.compose.yml"
COMPOSE = shutil.which("docker-compose") or str(ROOT / ".venv/bin/docker-compose")


# deployment file -> {render option: the shipped file it writes}; `make render` writes them all.
SHIPPED = {
    "deploy/deployments/standard.yaml": {"-o": "docker-compose.yml",
                                         "--prometheus-targets": "docker/prometheus/workers.json",
                                         "--chatui-compose": "docker-compose.chatui.yml"},
    "deploy/deployments/gpu-cluster.yaml": {"-o": "docker-compose.gpu-cluster.yml",
                                            "--chatui-env": "chatui.env.template"},
    "deploy/examples/chat-replicas.yaml": {"-o": "deploy/examples/chat-replicas.compose.yml"},
}


@pytest.mark.parametrize("deployment", list(SHIPPED))
def test_shipped_files_are_what_their_deployment_file_renders(deployment, tmp_path):
    outputs = SHIPPED[deployment]
    argv = ["render", "compose", str(ROOT / deployment)]
    for option, shipped in outputs.items():
        argv += [option, str(tmp_path / Path(shipped).name)]
    assert main(argv) == 0
    for shipped in outputs.values():
        fresh = (tmp_path / Path(shipped).name).read_text(encoding="utf-8")
        assert fresh == (ROOT / shipped).read_text(encoding="utf-8"), (
            f"{shipped} is not what {deployment} renders: edit the deployment file (or deploy/compose/), "
            "not the rendered file, and run `make render`")


def test_both_shipped_stacks_have_the_same_worker_targets():
    """Prometheus reads one workers.json (rendered from the standard file); the GPU cluster's are the same."""
    from stack.render import render_prometheus_targets

    assert {render_prometheus_targets(load_deployment(ROOT / f)) for f in list(SHIPPED)[:2]} == {
        (ROOT / "docker/prometheus/workers.json").read_text(encoding="utf-8")}


def test_every_replica_is_its_own_service():
    services = yaml.safe_load(render_compose(load_deployment(EXAMPLE), load_template(), "x.yaml"))["services"]
    workers = {name: s for name, s in services.items() if "MODEL_TYPE" in s["environment"]}
    seen = {name: (s["environment"]["WORKER_ID"], s["environment"]["WORKER_ADVERTISE_URL"], s["ports"],
                   s.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [{}])[0]
                   .get("device_ids"))
            for name, s in workers.items()}
    assert seen == {
        "smollm2-135m-instruct-0": ("HuggingFaceTB/SmolLM2-135M-Instruct-r0",
                                    "http://smollm2-135m-instruct-0:8000", ["8000:8000"], ["0"]),
        "smollm2-135m-instruct-1": ("HuggingFaceTB/SmolLM2-135M-Instruct-r1",
                                    "http://smollm2-135m-instruct-1:8001", ["8001:8001"], ["1"]),
        "minilm-0": ("minilm-r0", "http://minilm-0:8002", ["8002:8002"], None),
    }
    assert workers["minilm-0"]["environment"]["WORKER_STORE_MODEL_ID"] == "sentence-transformers/all-MiniLM-L6-v2"
    gateway = services["gateway"]["environment"]
    assert gateway["GATEWAY_DEFAULT_CHAT_MODEL"] == "${DEFAULT_CHAT_MODEL:-HuggingFaceTB/SmolLM2-135M-Instruct}"
    assert gateway["GATEWAY_DEFAULT_EMBEDDING_MODEL"] == "${DEFAULT_EMBEDDING_MODEL:-minilm}"


def test_a_named_service_keeps_its_env_knobs_and_aliases():
    """``compose: {service: llm}`` gives the names the hand-written files had: LLM_PORT, LLM_MODEL, LLM_GPU."""
    d = load_deployment(ROOT / "deploy/deployments/gpu-cluster.yaml")
    llm = yaml.safe_load(render_compose(d, load_template(), "x.yaml"))["services"]["llm"]
    assert llm["ports"] == ["${LLM_PORT:-8000}:8000"]
    assert llm["environment"]["MODEL_NAME"] == "${LLM_MODEL:-Qwen/Qwen2.5-0.5B-Instruct}"
    assert llm["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == ["${LLM_GPU:-0}"]
    assert llm["networks"] == {"default": {"aliases": ["llm-primary"]}}
    assert "profiles" not in llm


def test_rendered_file_is_valid_compose():
    if not Path(COMPOSE).is_file():
        pytest.skip("docker-compose is not installed (make install)")
    result = subprocess.run([COMPOSE, "--project-directory", str(ROOT), "--env-file", str(ROOT / ".env.example"),
                             "-f", str(RENDERED), "config", "--quiet"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_replicas_of_a_named_service_are_numbered(tmp_path):
    spec = tmp_path / "two.yaml"
    spec.write_text("models:\n  - id: HuggingFaceTB/SmolLM2-135M-Instruct\n    type: llm\n    source: {starter: llm}\n"
                    "    replicas: 2\n    port: 9000\n    compose: {service: chat, profiles: [chat]}\n")
    services = yaml.safe_load(render_compose(load_deployment(spec), load_template(), "two.yaml"))["services"]
    assert [(name, s["ports"], s["environment"]["WORKER_ADVERTISE_URL"], s["profiles"])
            for name, s in services.items() if name.startswith("chat")] == [
        ("chat-0", ["${CHAT_0_PORT:-9000}:9000"], "http://chat-0:9000", ["chat"]),
        ("chat-1", ["${CHAT_1_PORT:-9001}:9001"], "http://chat-1:9001", ["chat"])]


def test_chatui_lists_the_chat_and_vision_models_and_names_their_profiles():
    from stack.render_chatui import render_chatui_env

    text = render_chatui_env(load_deployment(ROOT / "deploy/deployments/standard.yaml"), "standard.yaml")
    models = json.loads(re.search(r"MODELS=`(.*?)`", text, re.S).group(1))
    assert [m["name"] for m in models] == ["Qwen/Qwen2.5-0.5B-Instruct", "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
                                           "llava-hf/llava-1.5-7b-hf"]
    assert "#   llava-hf/llava-1.5-7b-hf: its worker runs only with --profile multimodal" in text
    assert [m["endpoints"][0].get("multimodal") is not None for m in models] == [False, False, True]
