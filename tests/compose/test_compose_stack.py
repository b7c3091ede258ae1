"""The standard compose stack, run for real under Podman, driven as a user would.

Run by ``make test-compose`` (which installs Podman, builds the base image from Debian packages and
the project image from a host wheelhouse). Skipped when no container engine answers on DOCKER_HOST.

API keys are on, as ``.env.example`` ships them, with fresh random secrets: the test talks to the
registries and workers with the service token and to the gateway with the admin key (admin may do
everything a user key may).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from stack.starters import STARTER_EMBEDDING, STARTER_LLM, prepare
from tests.helpers.ports import free_port

pytestmark = pytest.mark.compose

ROOT = Path(__file__).resolve().parents[2]
OVERRIDE = Path(__file__).with_name("docker-compose.e2e.yml")
IMAGE = os.environ.get("MODEL_SERVICE_IMAGE", "localhost/model-service:latest")
COMPOSE = shutil.which("docker-compose") or str(ROOT / ".venv/bin/docker-compose")
UP_TIMEOUT_S = 420.0


def _engine_up() -> bool:
    host = os.environ.get("DOCKER_HOST", "")
    if not host.startswith("unix://"):
        return False
    try:
        transport = httpx.HTTPTransport(uds=host.removeprefix("unix://"))
        with httpx.Client(transport=transport, timeout=3) as c:
            return c.get("http://d/_ping").status_code == 200
    except httpx.HTTPError:
        return False


class HealthTicker:
    """Runs every container's own HEALTHCHECK every few seconds, as systemd timers would.

    Podman schedules health checks with systemd timers; without systemd (containers, CI sandboxes)
    they never run and ``depends_on: service_healthy`` would wait forever. The checks themselves
    are the ones the image and compose files define.
    """

    def __init__(self, project: str, interval: float = 2.0) -> None:
        self.project, self.interval = project, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-ticker", daemon=True)

    def __enter__(self) -> HealthTicker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            names = subprocess.run(
                ["podman", "ps", "--filter", f"label=com.docker.compose.project={self.project}",
                 "--format", "{{.Names}}"], capture_output=True, text=True, timeout=30,
            ).stdout.split()
            for name in names:
                subprocess.run(["podman", "healthcheck", "run", name], capture_output=True, timeout=60)


class Stack:
    """One compose project: the standard file plus the e2e override, with its own env file."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.project = f"msp-e2e-{secrets.token_hex(3)}"
        self.ports = {k: free_port() for k in ("GATEWAY_PORT", "SERVICE_REGISTRY_PORT", "MODEL_REGISTRY_PORT",
                                                "MINIO_PORT", "MINIO_CONSOLE_PORT", "LLM_PORT", "TINYLLAMA_PORT",
                                                "EMBEDDING_PORT", "MULTIMODAL_PORT", "TRANSCRIPTION_PORT")}
        self.svc_user, self.svc_password = "model-service", secrets.token_urlsafe(18)
        self.admin_key, self.service_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        s3 = workdir / "s3.json"
        s3.write_text(json.dumps({"identities": [{
            "name": "platform", "credentials": [{"accessKey": self.svc_user, "secretKey": self.svc_password}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
        s3.chmod(0o644)
        env = (ROOT / ".env.example").read_text()
        values = {
            **{k: str(v) for k, v in self.ports.items()},
            "MINIO_ROOT_PASSWORD": secrets.token_urlsafe(18), "MINIO_SVC_USER": self.svc_user,
            "MINIO_SVC_PASSWORD": self.svc_password, "LLM_MODEL": STARTER_LLM.model_id,
            "DEFAULT_CHAT_MODEL": STARTER_LLM.model_id, "EMBEDDING_MODEL": STARTER_EMBEDDING.model_id,
            "DEFAULT_EMBEDDING_MODEL": STARTER_EMBEDDING.model_id, "MODEL_SERVICE_IMAGE": IMAGE,
            "MODEL_SERVICE_AUTH": "true", "MODEL_SERVICE_ADMIN_KEY": self.admin_key,
            "MODEL_SERVICE_SERVICE_TOKEN": self.service_token,
        }
        lines = []
        for line in env.splitlines():
            key = line.split("=", 1)[0]
            lines.append(f"{key}={values.pop(key)}" if key in values else line)
        lines += [f"{k}={v}" for k, v in values.items()]
        lines.append(f"E2E_S3_CONFIG={s3}")
        self.env_file = workdir / "e2e.env"
        self.env_file.write_text("\n".join(lines) + "\n")

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [COMPOSE, "--project-name", self.project, "--project-directory", str(ROOT),
                "--env-file", str(self.env_file), "-f", str(ROOT / "docker-compose.yml"), "-f", str(OVERRIDE), *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def url(self, key: str) -> str:
        return f"http://127.0.0.1:{self.ports[key]}"

    def get(self, port: str, path: str, key: str | None, timeout: float = 10) -> httpx.Response:
        """``GET`` a published service, with ``key`` as the bearer when given."""
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.get(f"{self.url(port)}{path}", headers=headers, timeout=timeout)

    def openai_client(self, timeout: float = 120) -> openai.OpenAI:
        # The admin key (it may do all a user key may); test_user_keys_... makes and uses a user key.
        return openai.OpenAI(base_url=f"{self.url('GATEWAY_PORT')}/v1", api_key=self.admin_key, max_retries=0,
                             timeout=timeout)

    def up(self, *services: str) -> None:
        self.compose("up", "-d", "--no-build", "--no-deps", "--no-recreate", *services, timeout=UP_TIMEOUT_S)

    def health(self, service: str) -> str:
        """The service container's health as the engine reports it (``healthy``, ``starting``, ...)."""
        out = self.compose("ps", "--format", "json", service, check=False).stdout.strip()
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        return rows[0].get("Health", "") if rows else ""

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "40", check=False).stdout[-8000:]

    def import_starters(self) -> None:
        """Through the registry's own import code, into the stack's S3 store (published on the host)."""
        env = {**os.environ, "MODEL_REGISTRY_STORAGE_BACKEND": "s3",
               "MINIO_ENDPOINT": f"127.0.0.1:{self.ports['MINIO_PORT']}", "MINIO_SVC_USER": self.svc_user,
               "MINIO_SVC_PASSWORD": self.svc_password}
        for starter in (STARTER_LLM, STARTER_EMBEDDING):
            deadline = time.monotonic() + 60
            while True:
                result = subprocess.run(
                    [str(ROOT / ".venv/bin/model-service"), "models", "import", str(prepare(starter)),
                     "--id", starter.model_id, "--type", starter.model_type],
                    capture_output=True, text=True, timeout=300, env=env,
                )
                if result.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"import of {starter.model_id} failed:\n{result.stderr[-3000:]}")
                time.sleep(2)


def wait_for(predicate, timeout: float, what: str, stack: Stack) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}\n{stack.logs()}")


def models_listed(stack: Stack) -> bool:
    data = stack.get("GATEWAY_PORT", "/v1/models", stack.admin_key, timeout=5).json()["data"]
    return {STARTER_LLM.model_id, STARTER_EMBEDDING.model_id} <= {m["id"] for m in data}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if not _engine_up():
        pytest.skip("no container engine on DOCKER_HOST (run `make test-compose`)")
    running = Stack(tmp_path_factory.mktemp("compose"))
    ticker = HealthTicker(running.project).__enter__() if shutil.which("podman") else None
    try:
        # Podman 4 reports an empty health status until a check has run, which Compose's own
        # depends_on wait takes for a failure; so the test brings the stack up in the files' order.
        running.up("minio")
        wait_for(lambda: running.health("minio") == "healthy", 120, "S3", running)
        running.import_starters()
        running.up("minio-init", "service-registry", "model-registry")
        wait_for(lambda: running.health("service-registry") == "healthy", 120, "the service registry", running)
        running.up("llm", "embedding", "gateway")
        wait_for(lambda: models_listed(running), UP_TIMEOUT_S, "both models behind the gateway", running)
        yield running
    finally:
        running.compose("down", "-v", "--timeout", "10", check=False, timeout=180)
        if ticker is not None:
            ticker.__exit__()


def test_streamed_chat_and_embeddings_through_the_gateway(stack):
    client = stack.openai_client()
    chunks = list(client.chat.completions.create(
        model=STARTER_LLM.model_id, messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0, max_tokens=16, stream=True, stream_options={"include_usage": True},
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert chunks[-1].usage is not None
    emb = client.embeddings.create(model=STARTER_EMBEDDING.model_id, input=["a cat", "a kitten", "tax law"])
    assert [len(d.embedding) for d in emb.data] == [384, 384, 384]


def test_services_and_gpu_stats(stack):
    services = stack.get("GATEWAY_PORT", "/services", stack.service_token)
    assert services.status_code == 200
    assert STARTER_LLM.model_id in services.text and STARTER_EMBEDDING.model_id in services.text
    gpu = stack.get("GATEWAY_PORT", "/gpu-stats", stack.service_token, timeout=30)
    assert gpu.status_code == 200
    registry_gpu = stack.get("SERVICE_REGISTRY_PORT", "/gpu-stats", stack.service_token, timeout=30)
    assert registry_gpu.status_code == 200
    # The registry read the workers' /gpu-stats with the token: each row is a reading or "no GPU".
    assert registry_gpu.json()["data"] and "refused" not in registry_gpu.text


def test_every_service_wants_a_key(stack):
    wrong = secrets.token_urlsafe(32)
    for port, path in (("SERVICE_REGISTRY_PORT", "/services"), ("MODEL_REGISTRY_PORT", "/models"),
                       ("LLM_PORT", "/v1/models"), ("EMBEDDING_PORT", "/metrics"), ("GATEWAY_PORT", "/v1/models")):
        for key in (None, wrong):
            resp = stack.get(port, path, key)
            assert resp.status_code == 401, f"{port} {path}: {resp.status_code} {resp.text}"
            assert resp.json()["error"]["type"] == "authentication_error" and wrong not in resp.text
        assert stack.get(port, "/health", None).status_code == 200
    assert stack.get("LLM_PORT", "/v1/models", stack.service_token).json()["data"][0]["id"] == STARTER_LLM.model_id
    listed = stack.get("MODEL_REGISTRY_PORT", "/models", stack.service_token).json()["data"]
    assert {STARTER_LLM.model_id, STARTER_EMBEDDING.model_id} <= {m["id"] for m in listed}
    # Changing the store takes the admin key: the service token gets 403 (and nothing is deleted).
    denied = httpx.delete(f"{stack.url('MODEL_REGISTRY_PORT')}/models/{STARTER_LLM.model_id}",
                          headers={"authorization": f"Bearer {stack.service_token}"}, timeout=10)
    assert denied.status_code == 403 and denied.json()["error"]["type"] == "permission_error"


def test_user_keys_made_in_the_gateway_container(stack):
    """The README's way: ``docker compose exec gateway model-service keys create``; the key is limited to
    one model, its use shows in ``/usage``, and it outlives a recreated gateway container (volume)."""
    made = stack.compose("exec", "-T", "gateway", "model-service", "keys", "create", "--name", "compose-e2e",
                         "--models", STARTER_EMBEDDING.model_id, timeout=120)
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("msp-") and key not in stack.compose("exec", "-T", "gateway", "model-service", "keys",
                                                               "list", timeout=120).stdout

    def user_client() -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{stack.url('GATEWAY_PORT')}/v1", api_key=key, max_retries=0, timeout=60)

    client = user_client()
    assert [m.id for m in client.models.list().data] == [STARTER_EMBEDDING.model_id]
    assert len(client.embeddings.create(model=STARTER_EMBEDDING.model_id, input="hello").data) == 1
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model=STARTER_LLM.model_id, messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=4)

    def usage_shows_the_key() -> bool:  # the embedding and the refused chat (the log is written by a thread)
        by_key = stack.get("GATEWAY_PORT", "/usage", stack.admin_key).json()["by_key"]
        mine = [row for key_id, row in by_key.items() if key_id.startswith("key_")]
        return bool(mine) and mine[0]["requests"] == 2 and mine[0]["errors"] == 1 and mine[0]["prompt_tokens"] > 0

    wait_for(usage_shows_the_key, 30, "the user key's requests in /usage", stack)

    stack.compose("up", "-d", "--no-build", "--no-deps", "--force-recreate", "gateway", timeout=UP_TIMEOUT_S)

    def embeds_with_the_same_key() -> bool:
        try:
            return len(user_client().embeddings.create(model=STARTER_EMBEDDING.model_id, input="again").data) == 1
        except (openai.APIConnectionError, openai.InternalServerError, openai.NotFoundError):
            return False

    wait_for(embeds_with_the_same_key, 180, "the recreated gateway to accept the same user key", stack)


def test_restarted_worker_rejoins(stack):
    stack.compose("restart", "embedding", timeout=120)
    client = stack.openai_client(timeout=60)

    def embeds() -> bool:
        try:
            return len(client.embeddings.create(model=STARTER_EMBEDDING.model_id, input="back").data) == 1
        except openai.APIError:
            return False

    wait_for(embeds, 180, "the restarted embedding worker to serve again", stack)
    registry = stack.get("SERVICE_REGISTRY_PORT", "/services", stack.service_token).json()
    statuses = {s["models"][0]: s["status"] for s in registry["data"]}
    assert statuses[STARTER_EMBEDDING.model_id] == "healthy"
