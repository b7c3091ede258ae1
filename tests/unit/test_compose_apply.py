"""``apply --compose``: the compose subcommands that converge a rendered site, in the rolling order."""

from __future__ import annotations

import textwrap

import yaml

from stack.compose_apply import apply_compose, compose_steps
from stack.deployment_file import parse_deployment
from stack.render import load_template, render_compose

# Models with their own ports: a change to one model does not move another's port (which compose
# would have to recreate).
BEFORE = """\
    models:
      - {id: org/chat, type: llm, source: {store: current}, replicas: 2, port: 9000}
      - {id: org/emb, type: embedding, source: {store: current}, port: 9100}
      - {id: org/speech, type: transcription, source: {store: current}, port: 9200}
    """
AFTER = """\
    models:
      - {id: org/chat, type: llm, source: {store: current}, replicas: 1, port: 9000, limits: {max_queue: 9}}
      - {id: org/emb, type: embedding, source: {store: current}, replicas: 2, port: 9100}
    """


def _rendered(text: str) -> dict:
    return yaml.safe_load(render_compose(parse_deployment(textwrap.dedent(text)), load_template(), "site.yaml"))


def test_new_replicas_then_changed_ones_one_at_a_time_then_other_services_then_orphans():
    assert compose_steps(_rendered(BEFORE), _rendered(AFTER)) == [
        ["up", "-d", "--no-deps", "--wait", "emb-1"],
        ["up", "-d", "--no-deps", "--wait", "--force-recreate", "chat-0"],
        ["up", "-d", "--wait", "gateway"],  # its default transcription model is gone
        ["up", "-d", "--no-recreate", "--remove-orphans"],
    ]


def test_an_unchanged_site_does_nothing_unless_asked_to_recreate_every_worker():
    same = _rendered(AFTER)
    assert compose_steps(same, same) == []
    assert compose_steps(same, same, recreate=True) == [
        ["up", "-d", "--no-deps", "--wait", "--force-recreate", name] for name in ("chat-0", "emb-0", "emb-1")]


def test_apply_compose_writes_the_new_rendering_and_runs_each_step(tmp_path, capsys):
    site, out = tmp_path / "site.yaml", tmp_path / "site.compose.yml"
    site.write_text(textwrap.dedent(BEFORE))
    out.write_text(render_compose(parse_deployment(textwrap.dedent(BEFORE)), load_template(), "site.yaml"))
    site.write_text(textwrap.dedent(AFTER))
    assert apply_compose(str(site), str(out), compose_cmd="echo compose") == 0
    printed = capsys.readouterr().out
    assert f"compose -f {out} up -d --no-deps --wait emb-1" in printed and printed.rstrip().endswith("Applied.")
    assert set(yaml.safe_load(out.read_text())["services"]) >= {"chat-0", "emb-0", "emb-1"}
    assert "speech-0" not in yaml.safe_load(out.read_text())["services"]
