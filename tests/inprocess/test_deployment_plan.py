"""What ``up`` does with a deployment file before and while starting processes: the store gets every
model (a folder and a starter imported once; a hub source with no internet fails clearly), GPUs are
assigned, and each replica's worker gets its own port, id, advertise URL and the file's settings."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import pytest

from stack.deployment_file import parse_deployment
from stack.plan import PlanError, Planner, gpu_assignment, taken_ports
from stack.sources import SourceProblem, ensure_in_store
from tests.helpers.ports import free_ports


@pytest.fixture
def local_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "store"
    monkeypatch.setenv("MODEL_REGISTRY_STORAGE_BACKEND", "local")
    monkeypatch.setenv("MODEL_REGISTRY_LOCAL_ROOT", str(root))
    return root


def test_folder_and_starter_sources_are_imported_once(local_store: Path, minilm_path: Path):
    d = parse_deployment(textwrap.dedent(f"""\
        models:
          - {{id: team/embedder, type: embedding, source: {{folder: "{minilm_path}"}}}}
          - {{id: sentence-transformers/all-MiniLM-L6-v2, type: embedding, source: {{starter: embedding}}}}
        """))
    revisions = ensure_in_store(d)
    assert set(revisions) == {"team/embedder", "sentence-transformers/all-MiniLM-L6-v2"}
    # The same files are the same revision: a second run copies nothing and changes nothing.
    assert ensure_in_store(d) == revisions
    assert revisions["team/embedder"] == revisions["sentence-transformers/all-MiniLM-L6-v2"]


def test_a_store_source_must_already_be_there(local_store: Path):
    d = parse_deployment("models:\n  - {id: team/absent, type: llm, source: {store: current}}\n")
    with pytest.raises(SourceProblem, match=r"model 'team/absent' \(store source\): The model 'team/absent' is not"):
        ensure_in_store(d)


def test_a_hub_source_without_internet_fails_clearly(local_store: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = parse_deployment("models:\n  - {id: org/model, type: llm, source: {huggingface: {repo: org/model}}}\n")
    with pytest.raises(SourceProblem, match="cannot mirror org/model from Hugging Face"):
        ensure_in_store(d)


def test_gpus_named_per_replica_or_counted():
    d = parse_deployment(textwrap.dedent("""\
        models:
          - {id: a, type: llm, source: {starter: llm}, replicas: 2, placement: {gpus: [[1], [3]]}}
          - {id: b, type: embedding, source: {starter: embedding}, replicas: 2, placement: {gpu_count: 1}}
          - {id: c, type: transcription, source: {starter: transcription}, placement: cpu}
        """))
    assert gpu_assignment(d, 4) == {(0, 0): [1], (0, 1): [3], (1, 0): [0], (1, 1): [2]}
    with pytest.raises(PlanError, match=r"GPU index 3 is named in the file; this machine has 3 GPU\(s\)"):
        gpu_assignment(d, 3)
    counted = parse_deployment("models:\n  - {id: b, type: llm, source: {starter: llm}, replicas: 2, "
                               "placement: {gpu_count: 2}}\n")
    assert gpu_assignment(counted, 4) == {(0, 0): [0, 1], (0, 1): [2, 3]}
    with pytest.raises(PlanError, match=r"b replica 1 needs 2 GPU\(s\); this machine has 3"):
        gpu_assignment(counted, 3)


def test_each_replica_is_its_own_worker():
    d = parse_deployment(textwrap.dedent("""\
        host: 127.0.0.1
        models:
          - id: org/chat
            served_name: chat
            type: llm
            source: {starter: llm}
            replicas: 2
            port: 9100
            placement: {gpus: [[0], [1]]}
            limits: {max_queue: 3}
            engine_args: {dtype: bfloat16}
          - {id: e, type: embedding, source: {starter: embedding}, placement: cpu, port: 9200}
        """))
    children = Planner(d, {"org/chat": "rev1", "e": "rev2"}, gpus=gpu_assignment(d, 2)).children()
    assert [c.name for c in children] == ["registry", "models", "llm-0", "llm-1", "embedding", "gateway"]
    first, second, emb = children[2:5]
    assert (first.url, second.url) == ("http://127.0.0.1:9100", "http://127.0.0.1:9101")
    assert first.env == {"WORKER_ID": "chat-r0", "WORKER_STORE_MODEL_ID": "org/chat", "WORKER_GPU_INDICES": "0",
                         "WORKER_DTYPE": "bfloat16", "WORKER_MAX_QUEUE": "3"}
    assert second.env["WORKER_ID"] == "chat-r1" and second.env["WORKER_GPU_INDICES"] == "1"
    flags = dict(zip(second.argv[4::2], second.argv[5::2], strict=False))
    assert flags["--port"] == "9101" and flags["--model-name"] == "chat" and flags["--device"] == "cuda:1"
    assert second.argv[second.argv.index("--advertise-url") + 1] == "http://127.0.0.1:9101"
    assert second.argv[second.argv.index("--model-revision") + 1] == "rev1"
    assert emb.argv[emb.argv.index("--device") + 1] == "cpu"
    gateway = children[-1].argv
    assert gateway[gateway.index("--default-chat-model") + 1] == "chat"
    assert gateway[gateway.index("--default-embedding-model") + 1] == "e"


def test_taken_ports_are_named_with_their_service():
    gateway, registry, models, worker = free_ports(4)
    d = parse_deployment(f"ports: {{gateway: {gateway}, service_registry: {registry}, model_registry: {models}}}\n"
                         f"models:\n  - {{id: a, type: llm, source: {{starter: llm}}, port: {worker}}}\n")
    assert taken_ports(d) == []
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", worker))
        holder.listen()
        assert taken_ports(d) == [f"port {worker} on 127.0.0.1 (wanted by a replica 0) is not free: "
                                  "Address already in use"]
