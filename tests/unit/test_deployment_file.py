"""The deployment file: the shipped starter file is valid, and each bad file gets one clear error per
problem naming the field path and the line; the published JSON Schema matches the model."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from stack.cli import main
from stack.deployment_file import STARTER_FILE, DeploymentFileError, load_deployment, parse_deployment, schema_text
from stack.starters import STARTERS

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "deployment.schema.json"


def _errors(text: str) -> list[str]:
    with pytest.raises(DeploymentFileError) as caught:
        parse_deployment(textwrap.dedent(text), "d.yaml")
    return caught.value.lines


def test_starter_file_serves_todays_three_starter_models_on_todays_ports():
    d = load_deployment(STARTER_FILE)
    assert [(m.id, m.type, m.source.starter, m.port, m.replicas) for m in d.models] == [
        (STARTERS[0].model_id, "llm", "llm", 8000, 1),
        (STARTERS[1].model_id, "embedding", "embedding", 8002, 1),
        (STARTERS[2].model_id, "transcription", "transcription", 8004, 1),
    ]
    assert (d.ports.gateway, d.ports.service_registry, d.ports.model_registry) == (8080, 8070, 8090)
    assert d.defaults() == {s.model_type: s.model_id for s in STARTERS}


def test_unknown_field():
    assert _errors("""\
        models:
          - id: a
            type: llm
            source: {starter: llm}
            replica: 2
        """) == ["d.yaml:5: models[0].replica: unknown field (not part of a deployment file; "
                 "see docs/deployment.schema.json)"]


def test_wrong_type():
    assert _errors("""\
        ports:
          gateway: eighty
        models:
          - {id: a, type: llm, source: {starter: llm}}
        """) == ["d.yaml:2: ports.gateway: Input should be a valid integer, unable to parse string as an integer"]


def test_duplicate_port():
    assert _errors("""\
        models:
          - id: a
            type: llm
            source: {starter: llm}
            replicas: 2
            port: 9000
          - id: b
            type: embedding
            source: {starter: embedding}
            port: 9001
        """) == ["d.yaml:10: models[1].port: port 9001 for b replica 0 is already used by a replica 1"]


def test_missing_source():
    assert _errors("""\
        models:
          - {id: a, type: llm, source: {starter: llm}}
          - id: b
            type: embedding
        """) == ["d.yaml:3: models[1].source: required field missing"]


def test_gpu_index_twice():
    assert _errors("""\
        models:
          - id: a
            type: llm
            source: {starter: llm}
            replicas: 2
            placement:
              gpus: [[0], [1]]
          - id: b
            type: embedding
            source: {starter: embedding}
            placement: {gpus: [[1, 2]]}
        """) == ["d.yaml:11: models[1].placement.gpus[0]: GPU 1 is already given to models[0] replica 1"]


def test_every_problem_is_reported_once_each():
    lines = _errors("""\
        models:
          - {id: a, type: llm, source: {starter: llm}, default: true, engine: whisper}
          - {id: a, type: embedding, source: {folder: /m}}
          - {id: c, type: llm, source: {store: current}, default: true, engine_args: {port: 1}}
        """)
    assert lines == [
        "d.yaml:2: models[0].engine: the 'whisper' engine serves transcription models, not 'llm'",
        "d.yaml:3: models[1].id: model id 'a' is already used by models[0]",
        "d.yaml:4: models[2].default: models[0] is already the default llm model",
        "d.yaml:4: models[2].engine_args.port: 'port' is not a worker setting an engine argument may set",
    ]


def test_duplicate_yaml_key_and_bad_yaml():
    assert _errors("models: []\nmodels: []\n") == ["d.yaml:2: models: this key is given twice"]
    assert _errors("models: [\n") [0].startswith("d.yaml:2: not valid YAML")


def test_a_source_needs_exactly_one_kind():
    assert _errors("""\
        models:
          - {id: a, type: llm, source: {starter: llm, folder: /m}}
        """) == ["d.yaml:2: models[0].source: give exactly one of starter, huggingface, folder, gguf, store (got 2)"]


def test_workers_without_a_port_take_the_next_free_ones(tmp_path, capsys):
    file = tmp_path / "d.yaml"
    file.write_text(textwrap.dedent("""\
        ports: {first_worker: 8001, gateway: 8002}
        models:
          - {id: a, type: llm, source: {starter: llm}, replicas: 2}
          - {id: b, type: embedding, source: {starter: embedding}, port: 8004}
          - {id: c, type: transcription, source: {starter: transcription}}
        """))
    assert main(["deployment", "check", str(file)]) == 0
    ports = [line.split("\t")[2] for line in capsys.readouterr().out.splitlines()]
    assert ports == ["127.0.0.1:8001", "127.0.0.1:8003", "127.0.0.1:8004", "127.0.0.1:8005"]


def test_check_command_fails_with_the_problems(tmp_path, capsys):
    file = tmp_path / "d.yaml"
    file.write_text("models:\n  - {id: a, type: chat, source: {starter: llm}}\n")
    assert main(["deployment", "check", str(file)]) == 2
    assert f"{file}:2: models[0].type: Input should be" in capsys.readouterr().err


def test_published_schema_matches_the_model():
    """Regenerate with: model-service deployment schema -o docs/deployment.schema.json"""
    assert SCHEMA.read_text(encoding="utf-8") == schema_text()
