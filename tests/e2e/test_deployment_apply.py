"""Live changes to a running ``model-service up`` with real processes and the real starter models:
``apply`` of a changed file and a revision rollout and rollback, each under continuous load from 16
clients, lose no request."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from openai import OpenAI

from stack.starters import STARTER_EMBEDDING, STARTER_LLM, STARTER_TRANSCRIPTION
from tests.helpers.load import Load, chat, embeddings
from tests.helpers.polling import eventually_sync
from tests.helpers.ports import free_port_pair, free_ports
from tests.helpers.processes import REPO, process, registry_services

pytestmark = pytest.mark.e2e
READY_TIMEOUT_S = 300.0
CHAT, EMBEDDING, SPEECH = STARTER_LLM.model_id, STARTER_EMBEDDING.model_id, STARTER_TRANSCRIPTION.model_id
ADDED = "minilm-second"
QUEUE = "limits: {max_queue: 64, default_max_tokens: 4}"


def _head(gateway: int, registry: int, store: Path | None = None) -> str:
    """``store``: a store of the test's own; None: the shared local store, where the starter models
    already are after the first run (nothing is copied again)."""
    where = f"store: {{local_root: {store}}}\n" if store is not None else ""
    return f"ports: {{gateway: {gateway}, service_registry: {registry}, model_registry: null}}\n{where}models:\n"


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def _wait_up(proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while "Model Service Platform is up." not in log.read_text(errors="replace"):
        assert proc.poll() is None, log.read_text(errors="replace")[-4000:]
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-4000:]
        time.sleep(0.5)


def _stack_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stack", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})})


def _served(registry: int) -> Counter[str]:
    rows = registry_services(f"http://127.0.0.1:{registry}").values()
    return Counter(model for row in rows if row["status"] == "healthy" for model in row["models"])


def test_apply_under_load_scales_adds_and_removes_without_a_failed_request(
        tmp_path, smollm_path, minilm_path, whisper_path):
    gateway, registry, emb_port, stt_port = free_ports(4)
    chat_port = free_port_pair()
    head = _head(gateway, registry)
    before = _write(tmp_path / "before.yaml", head + f"""\
          - {{id: {CHAT}, type: llm, source: {{starter: llm}}, replicas: 2, port: {chat_port}, {QUEUE}}}
          - {{id: {EMBEDDING}, type: embedding, source: {{starter: embedding}}, port: {emb_port}, {QUEUE}}}
          - {{id: {SPEECH}, type: transcription, source: {{starter: transcription}}, port: {stt_port}}}
        """)
    after = _write(tmp_path / "after.yaml", head + f"""\
          - {{id: {CHAT}, type: llm, source: {{starter: llm}}, replicas: 1, port: {chat_port}, {QUEUE}}}
          - {{id: {EMBEDDING}, type: embedding, source: {{starter: embedding}}, replicas: 2, port: {emb_port},
              {QUEUE}}}
          - {{id: {ADDED}, type: embedding, source: {{starter: embedding}}}}
        """)
    log = tmp_path / "up.log"
    with process(["up", "--deployment", str(before), "--ready-timeout", str(READY_TIMEOUT_S)], {}, log) as proc:
        _wait_up(proc, log)
        assert _served(registry) == {CHAT: 2, EMBEDDING: 1, SPEECH: 1}
        base_url = f"http://127.0.0.1:{gateway}/v1"
        with Load(base_url, [chat(CHAT)] * 8 + [embeddings(EMBEDDING)] * 8) as load:
            applied = _stack_cli("apply", str(after))
            time.sleep(2)  # requests keep flowing to the end state too
        assert applied.returncode == 0, applied.stdout + applied.stderr + log.read_text()[-3000:]
        assert "Applied." in applied.stdout
        assert load.failures == [], load.failures[:5]
        assert load.done > 16
        assert _served(registry) == {CHAT: 1, EMBEDDING: 2, ADDED: 1}, registry_services(
            f"http://127.0.0.1:{registry}")
        client = OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        listed = {m.id for m in client.models.list().data}
        assert ADDED in listed and SPEECH not in listed
        assert len(client.embeddings.create(model=ADDED, input=["hello"]).data[0].embedding) == 384
        assert proc.poll() is None, log.read_text()[-3000:]


def _revisions(tmp_path: Path, smollm_path: Path, env: dict[str, str]) -> None:
    """The starter chat model as two store revisions that answer differently: v2's chat template has
    another default system prompt (its other files are links to v1's)."""
    v2 = tmp_path / "smollm-v2"
    v2.mkdir()
    for f in smollm_path.iterdir():
        if f.is_file() and f.name != "chat_template.jinja":
            (v2 / f.name).symlink_to(f)
    template = (smollm_path / "chat_template.jinja").read_text()
    pirate = "You are a pirate. Begin every answer with Arr and talk like a pirate."
    assert "You are a helpful AI assistant named SmolLM" in template
    (v2 / "chat_template.jinja").write_text(template.replace(
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face", pirate))
    for folder, revision in ((smollm_path, "v1"), (v2, "v2")):
        done = _stack_cli("models", "import", str(folder), "--id", CHAT, "--type", "llm", "--revision", revision,
                          env=env)
        assert done.returncode == 0, done.stderr
    assert _stack_cli("models", "alias", CHAT, "current", "v1", env=env).returncode == 0


def _answer(base_url: str) -> str:
    answer = OpenAI(base_url=base_url, api_key="unused", max_retries=0).chat.completions.create(
        model=CHAT, max_tokens=12, temperature=0, messages=[{"role": "user", "content": "Who are you?"}])
    return answer.choices[0].message.content or ""


def test_revision_rollout_and_rollback_under_load_lose_no_request(tmp_path, smollm_path):
    gateway, registry, chat_port = free_ports(3)
    env = {"MODEL_REGISTRY_LOCAL_ROOT": str(tmp_path / "store")}
    _revisions(tmp_path, smollm_path, env)
    file = _write(tmp_path / "deployment.yaml", _head(gateway, registry, tmp_path / "store") + f"""\
          - {{id: {CHAT}, type: llm, source: {{store: current}}, port: {chat_port}, {QUEUE}}}
        """)
    log = tmp_path / "up.log"
    base_url = f"http://127.0.0.1:{gateway}/v1"
    with process(["up", "--deployment", str(file), "--ready-timeout", str(READY_TIMEOUT_S)], env, log) as proc:
        _wait_up(proc, log)
        first = _answer(base_url)
        answers = []
        for revision in ("v2", "v1"):
            with Load(base_url, [chat(CHAT)] * 16) as load:
                moved = _stack_cli("models", "alias", CHAT, "current", revision, "--rollout",
                                   "--gateway-port", str(gateway), env=env)
            assert moved.returncode == 0, moved.stdout + moved.stderr + log.read_text()[-3000:]
            assert "replace" in moved.stdout and f"-> {revision}" in moved.stdout, moved.stdout
            assert load.failures == [], load.failures[:5]
            assert load.done > 16
            assert _served(registry) == {CHAT: 1}
            answers.append(eventually_sync(lambda: _answer(base_url), "an answer"))
        assert answers[0] != first, (first, answers)  # the new revision answers
        assert answers[1] == first  # and the rollback brings the old answers back
        assert proc.poll() is None, log.read_text()[-3000:]
    shutil.rmtree(tmp_path / "store", ignore_errors=True)
