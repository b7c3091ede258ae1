"""What ``apply`` plans (stack/rollout.py): per replica, in the rolling order, and only real changes."""

from __future__ import annotations

import json
import textwrap

from stack.deployment_file import parse_deployment
from stack.plan import Planner, write_prometheus_targets
from stack.rollout import diff, notes, restart_only_changes


def _deployment(models: str, gateway: int = 8080):
    return parse_deployment(textwrap.dedent(f"""\
        ports: {{gateway: {gateway}}}
        models:
        """) + textwrap.indent(textwrap.dedent(models), "  "))


def _steps(before: str, after: str, revisions=({}, {})):
    old, new = _deployment(before), _deployment(after)
    running = Planner(old, revisions[0]).workers()
    return [(s.action, s.model, s.replica, s.why) for s in diff(running, Planner(new, revisions[1]).workers())]


CHAT2 = "- {id: chat, type: llm, source: {starter: llm}, engine: fake, replicas: 2}\n"
EMB = "- {id: emb, type: embedding, source: {starter: embedding}, engine: fake}\n"


def test_the_same_file_plans_nothing():
    assert _steps(CHAT2 + EMB, CHAT2 + EMB) == []


def test_a_replica_that_only_moves_port_keeps_running():
    assert _steps(CHAT2 + EMB, EMB + CHAT2) == []


def test_starts_come_first_then_replacements_then_stops():
    after = ("- {id: chat, type: llm, source: {starter: llm}, engine: fake, limits: {max_queue: 7}}\n"
             "- {id: emb, type: embedding, source: {starter: embedding}, engine: fake, replicas: 2}\n"
             "- {id: new, type: llm, source: {starter: llm}, engine: fake}\n")
    assert _steps(CHAT2 + EMB, after) == [
        ("start", "emb", 1, "new replica"),
        ("start", "new", 0, "new replica"),
        ("replace", "chat", 0, "WORKER_MAX_QUEUE"),
        ("stop", "chat", 1, "not in the file"),
    ]


def test_a_new_store_revision_replaces_every_replica():
    file = "- {id: chat, type: llm, source: {store: current}, replicas: 2}\n"
    steps = _steps(file, file, ({"chat": "v1"}, {"chat": "v2"}))
    assert steps == [("replace", "chat", 0, "revision v1 -> v2"), ("replace", "chat", 1, "revision v1 -> v2")]


def test_global_changes_are_refused_and_default_changes_noted():
    assert restart_only_changes(_deployment(EMB), _deployment(EMB, gateway=9090)) == ["ports changed"]
    other = "- {id: emb2, type: embedding, source: {starter: embedding}, engine: fake}\n"
    assert notes(_deployment(EMB), _deployment(other)) == [
        "the gateway keeps 'emb' as its default embedding model (the file now says 'emb2'); restart 'up' to "
        "change it"]


def test_prometheus_targets_follow_where_the_workers_really_listen(tmp_path):
    path = tmp_path / "targets.json"
    write_prometheus_targets(_deployment(CHAT2 + EMB), path, worker_ports=[9101, 9102])
    groups = {g["labels"]["job"]: g["targets"] for g in json.loads(path.read_text())}
    assert groups["worker"] == ["127.0.0.1:9101", "127.0.0.1:9102"]
    assert groups["gateway"] == ["127.0.0.1:8080"]
