"""``model-service render compose``: one compose service per replica, each with its own id, advertise URL
and GPU; the committed example equals what the command renders from its deployment file."""

from __future__ import annotations

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


def test_committed_rendering_matches_the_deployment_file(tmp_path, capsys):
    """Render again with: model-service render compose deploy/examples/chat-replicas.yaml -o <that>.compose.yml"""
    out = tmp_path / "compose.yml"
    assert main(["render", "compose", str(EXAMPLE), "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == RENDERED.read_text(encoding="utf-8")


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
    assert gateway["GATEWAY_DEFAULT_CHAT_MODEL"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert gateway["GATEWAY_DEFAULT_EMBEDDING_MODEL"] == "minilm"


def test_rendered_file_is_valid_compose():
    if not Path(COMPOSE).is_file():
        pytest.skip("docker-compose is not installed (make install)")
    result = subprocess.run([COMPOSE, "--project-directory", str(ROOT), "--env-file", str(ROOT / ".env.example"),
                             "-f", str(RENDERED), "config", "--quiet"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
