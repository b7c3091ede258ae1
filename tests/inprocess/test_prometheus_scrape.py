"""The monitoring profile's Prometheus configuration against the real services and a real Prometheus.

``promtool`` checks the shipped ``docker/prometheus/prometheus.yml``. Then a service registry, a model
registry on a local folder, two fake-engine workers (they register themselves) and a gateway that follows
the registry run on loopback with API keys on, and the ``prometheus`` binary scrapes them with a
configuration derived from the shipped one: every job keeps its name, path, labels and authorization;
only the targets (compose host names -> loopback ports), the token file and the intervals change.

Chat requests through the gateway must show up in ``gateway_requests_total`` and ``worker_requests_total``;
every PromQL expression of the Grafana dashboard must evaluate without an error, the panels the traffic
feeds must have data, and every ``{{label}}`` a legend names must be on the series it labels. A wrong
token turns every target down with the 401 in ``lastError``.

Needs the ``prometheus`` and ``promtool`` binaries (Debian package ``prometheus``, installed by
``scripts/ci-deps.sh``); without them the tests skip.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI

from common.auth import AuthSettings, new_secret
from gateway.app import create_app as create_gateway
from gateway.settings import GatewaySettings
from model_registry.app import create_app as create_model_registry
from model_registry.records import JobRecord
from model_service.app import create_app as create_worker
from model_service.settings import WorkerSettings
from service_registry.app import create_app as create_service_registry
from service_registry.settings import RegistrySettings
from tests.helpers.deploy_files import COMPOSE, expressions, rendered
from tests.helpers.model_registry import registry_settings
from tests.helpers.ports import free_ports
from tests.helpers.servers import serve

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "docker/prometheus/prometheus.yml"
MOUNT = "/etc/prometheus/"  # where docker-compose.monitoring.yml mounts docker/prometheus/
DASHBOARD = ROOT / "docker/grafana/dashboards/model-service.json"
PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(  # e2e: a real Prometheus process
    PROMETHEUS is None or PROMTOOL is None,
    reason="the prometheus and promtool binaries are not installed (run scripts/ci-deps.sh as root, "
           "or apt-get install --no-install-recommends prometheus)")]

ADMIN, SERVICE, WRONG = new_secret(), new_secret(), new_secret()
RUNNING_JOB = "f" * 32
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
WAIT_S = 40.0
CHATS = 3  # non-streamed chats through the gateway; one streamed chat comes on top
# Which compose host each loopback worker stands in for; the shipped config's other worker hosts
# (tinyllama, multimodal, transcription) are left out of the derived config: nothing serves them here.
MODELS = {"llm": ("tiny", "llm"), "embedding": ("emb", "embedding")}
# Metrics whose dashboard panels must have data once the traffic went through (the rest may be empty:
# GPUs on a host without one, retries and failures that did not happen).
MUST_HAVE_DATA = ["gateway_requests_total", "gateway_request_duration_seconds_bucket", "gateway_in_flight_requests",
                  "worker_time_to_first_token_seconds_bucket", "worker_completion_tokens_total",
                  "worker_requests_total", "worker_queue_depth", "worker_model_loaded",
                  "service_registry_replica_healthy", "gateway_circuit_state", "service_registry_services",
                  "service_registry_probe_duration_seconds_bucket", "model_registry_jobs",
                  "model_registry_job_progress_bytes", "model_registry_stored_bytes", "model_registry_models"]


def auth_on() -> AuthSettings:
    return AuthSettings(_env_file=None, auth=True, admin_key=ADMIN, service_token=SERVICE)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def shipped() -> dict[str, Any]:
    return yaml.safe_load(SHIPPED.read_text())


def token_path(config: dict[str, Any]) -> str:
    [path] = {job["authorization"]["credentials_file"] for job in config["scrape_configs"]}
    return path


def groups(job: dict[str, Any]) -> list[dict[str, Any]]:
    """A job's target groups: its static ones, or the ones in its file_sd files (the workers' rendered
    workers.json; a path in the shipped config is the compose mount of docker/prometheus/)."""
    if "static_configs" in job:
        return job["static_configs"]
    return [group for sd in job["file_sd_configs"] for path in sd["files"]
            for group in json.loads(Path(path.replace(MOUNT, str(SHIPPED.parent) + "/")).read_text())]


def derive(config: dict[str, Any], ports: dict[str, int], token_file: Path) -> dict[str, Any]:
    """The shipped config with loopback targets, a local token file and 1 s scrapes; nothing else changes
    (a file_sd job keeps file_sd, reading a copy of its file with the loopback targets)."""
    derived = copy.deepcopy(config)
    derived["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    for job in derived["scrape_configs"]:
        job["authorization"]["credentials_file"] = str(token_file)
        kept = copy.deepcopy(groups(job))
        for group in kept:
            group["targets"] = [f"127.0.0.1:{ports[host]}" for host, _, _ in
                                (t.rpartition(":") for t in group["targets"]) if host in ports]
        kept = [g for g in kept if g["targets"]]
        assert kept, f"job {job['job_name']} lost every target"
        if "static_configs" in job:
            job["static_configs"] = kept
        else:
            targets_file = token_file.parent / f"{job['job_name']}.json"
            targets_file.write_text(json.dumps(kept))
            job["file_sd_configs"] = [{**job["file_sd_configs"][0], "files": [str(targets_file)]}]
    return derived


def without_targets(config: dict[str, Any]) -> list[dict[str, Any]]:
    jobs = copy.deepcopy(config["scrape_configs"])
    for job in jobs:
        job["authorization"].pop("credentials_file")
        for group in job.get("static_configs", []):
            group.pop("targets")
        for sd in job.get("file_sd_configs", []):
            sd.pop("files")
    return jobs


def test_promtool_accepts_the_shipped_config(tmp_path: Path) -> None:
    """The file as shipped, with only the token file's path moved to where this test can write it."""
    token_file, copied = tmp_path / "service-token", tmp_path / "prometheus.yml"
    copied.write_text(SHIPPED.read_text().replace(token_path(shipped()), str(token_file))
                      .replace(MOUNT, str(SHIPPED.parent) + "/"))  # the rendered workers.json is checked too
    missing = subprocess.run([PROMTOOL, "check", "config", str(copied)], capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and str(token_file) in missing.stdout + missing.stderr
    token_file.write_text(SERVICE)
    token_file.chmod(0o600)
    checked = subprocess.run([PROMTOOL, "check", "config", str(copied)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.skipif(not Path(COMPOSE).exists(), reason="the docker-compose binary is not installed")
@pytest.mark.parametrize("token", [SERVICE, ""], ids=["auth-on", "auth-off"])
def test_the_container_command_writes_the_token_file_and_starts_prometheus(
        token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The prometheus service's command as compose renders it, run by ``sh`` with the real binary: only its
    paths move under tmp_path (the tmpfs, the mounted config, the data volume) and it listens on loopback."""
    monkeypatch.setenv("MODEL_SERVICE_SERVICE_TOKEN", token)
    service = rendered(["docker-compose.yml", "docker-compose.monitoring.yml"], "monitoring")["services"]["prometheus"]
    assert service["environment"]["MODEL_SERVICE_SERVICE_TOKEN"] == token
    [tmpfs] = service["tmpfs"]
    # `compose config` writes a literal $ back as $$ (its own escape); the container gets the $.
    [script] = [c.replace("$$", "$") for c in service["command"]]
    run_dir, config = tmp_path / "run", tmp_path / "etc/prometheus.yml"
    run_dir.mkdir()
    config.parent.mkdir()
    config.write_text(SHIPPED.read_text().replace(tmpfs, str(run_dir)))
    port = free_ports(1)[0]
    for old, new in ((tmpfs, str(run_dir)), ("--config.file=/etc/prometheus/prometheus.yml", f"--config.file={config}"),
                     ("--storage.tsdb.path=/prometheus", f"--storage.tsdb.path={tmp_path / 'data'}"),
                     ("exec /bin/prometheus", f"exec {PROMETHEUS} --web.listen-address=127.0.0.1:{port}")):
        assert old in script, old
        script = script.replace(old, new)
    env = {**os.environ, **{k: str(v) for k, v in service["environment"].items()}}
    with process([*service["entrypoint"], script], tmp_path / "prometheus.log", env) as proc:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=5) as client:
            for _ in range(int(WAIT_S / 0.25)):
                try:
                    if client.get("/-/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None, _read(tmp_path / "prometheus.log")
                time.sleep(0.25)
            else:
                raise AssertionError(f"prometheus never got ready\n{_read(tmp_path / 'prometheus.log')}")
            flags = client.get("/api/v1/status/flags").json()["data"]
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
    token_file = run_dir / "service-token"
    assert token_file.read_text() == (token or "auth-off")  # no newline: the whole file is the bearer
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert not any(e.startswith(b"MODEL_SERVICE_SERVICE_TOKEN=") for e in environ)
    assert flags["config.file"] == str(config) and flags["storage.tsdb.retention.time"] == "15d"


# --- the real services and a real Prometheus -----------------------------------------------------------

@dataclass
class Platform:
    gateway: httpx.AsyncClient
    model_registry: httpx.AsyncClient
    model_registry_app: FastAPI


@asynccontextmanager
async def platform(tmp_path: Path, ports: dict[str, int]) -> AsyncIterator[Platform]:
    """Service registry, model registry, workers and gateway with auth on, each on its loopback port."""
    auth = auth_on()
    async with AsyncExitStack() as stack:
        registry_url = await stack.enter_async_context(serve(create_service_registry(RegistrySettings(
            _env_file=None, poll_interval_s=0.3, probe_timeout_s=2.0), auth=auth), ports["service-registry"]))
        model_registry = create_model_registry(registry_settings("local", tmp_path), auth=auth)
        model_registry_url = await stack.enter_async_context(serve(model_registry, ports["model-registry"]))
        for host, (model, kind) in MODELS.items():
            settings = WorkerSettings(_env_file=None, engine="fake", model_name=model, model_type=kind,
                                      registry_url=registry_url, worker_id=f"{host}-0", heartbeat_interval_s=1.0,
                                      advertise_url=f"http://127.0.0.1:{ports[host]}")
            await stack.enter_async_context(serve(create_worker(settings, auth=auth), ports[host]))
        gateway = GatewaySettings(_env_file=None, registry_url=registry_url, probe_interval_s=0.3,
                                  keys_file=tmp_path / "keys.json", usage_log=tmp_path / "usage.log")
        gateway_url = await stack.enter_async_context(serve(create_gateway(gateway, auth=auth), ports["gateway"]))
        clients = [await stack.enter_async_context(httpx.AsyncClient(
            base_url=url, headers=bearer(ADMIN), trust_env=False, timeout=30)) for url in (gateway_url,
                                                                                          model_registry_url)]
        yield Platform(*clients, model_registry)


@contextmanager
def process(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` in its own process group, output to ``log``; stopped (then killed) at the end."""
    env = {k: v for k, v in (os.environ if env is None else env).items() if "proxy" not in k.lower()}
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        except ProcessLookupError:
            pass


@contextmanager
def prometheus(config_file: Path, data: Path, port: int, log: Path) -> Iterator[str]:
    """The real binary on 127.0.0.1:``port``."""
    with process([PROMETHEUS, f"--config.file={config_file}", f"--storage.tsdb.path={data}",
                  f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"], log):
        yield f"http://127.0.0.1:{port}"


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


async def poll(check: Callable[[], Awaitable[Any]], what: str, log: Path | None = None) -> Any:
    """``check`` until it returns something truthy, for at most WAIT_S; the failure shows the last value."""
    last: Any = None
    try:
        async with asyncio.timeout(WAIT_S):
            while True:
                if last := await check():
                    return last
                await asyncio.sleep(0.25)
    except TimeoutError:
        tail = (await asyncio.to_thread(_read, log))[-3000:] if log is not None else ""
        raise AssertionError(f"timed out waiting for {what}; last seen: {last!r}\n{tail}") from None


class Prom:
    """Prometheus's HTTP API; polling shows Prometheus's log when it gives up."""

    def __init__(self, client: httpx.AsyncClient, log: Path) -> None:
        self.client, self.log = client, log

    async def poll(self, check: Callable[[], Awaitable[Any]], what: str) -> Any:
        return await poll(check, what, self.log)

    async def targets(self) -> list[dict[str, Any]]:
        try:
            resp = await self.client.get("/api/v1/targets", params={"state": "active"})
        except httpx.TransportError:
            return []  # not listening yet
        return resp.json()["data"]["activeTargets"] if resp.status_code == 200 else []

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result; a PromQL error fails the test."""
        resp = await self.client.get("/api/v1/query", params={"query": expr})
        body = resp.json()
        assert resp.status_code == 200 and body["status"] == "success", f"{expr}: {resp.status_code} {body}"
        assert body["data"]["resultType"] == "vector", expr
        return body["data"]["result"]

    async def value(self, expr: str) -> float | None:
        result = await self.query(expr)
        return float(result[0]["value"][1]) if result else None


async def test_prometheus_scrapes_every_service_with_the_token(tmp_path: Path) -> None:
    config = shipped()
    hosts = ["gateway", "service-registry", "model-registry", *MODELS]
    *service_ports, prom_port = free_ports(len(hosts) + 1)
    ports = dict(zip(hosts, service_ports, strict=True))
    token_file = tmp_path / "service-token"
    token_file.write_text(SERVICE)
    derived = derive(config, ports, token_file)
    assert without_targets(derived) == without_targets(config)  # names, paths, labels, auth type: as shipped
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(derived))
    log = tmp_path / "prometheus.log"
    jobs = {job["job_name"]: job for job in derived["scrape_configs"]}

    async with platform(tmp_path, ports) as services:
        await send_traffic(services, tmp_path)
        with prometheus(config_file, tmp_path / "tsdb", prom_port, log) as prom_url:
            async with httpx.AsyncClient(base_url=prom_url, trust_env=False, timeout=10) as client:
                prom = Prom(client, log)
                await every_target_up(prom, jobs)
                await traffic_is_counted(prom, ports)
                await dashboard_queries_work(prom)
                await asyncio.to_thread(token_file.write_text, WRONG)  # read again at each scrape
                await every_target_refused(prom, jobs)
    logged = _read(log)
    assert WRONG not in logged and SERVICE not in logged


async def send_traffic(services: Platform, tmp_path: Path) -> None:
    """Chats through the gateway (one streamed), a finished import and a running job on the model registry."""
    gateway = services.gateway

    async def routed() -> bool:
        resp = await gateway.get("/v1/models")
        return resp.status_code == 200 and {"tiny", "emb"} <= {m["id"] for m in resp.json()["data"]}

    await poll(routed, "the gateway to learn both workers from the registry")
    body = {"model": "tiny", "messages": [{"role": "user", "content": "the quick brown fox"}], "max_tokens": 8}
    for _ in range(CHATS):
        resp = await gateway.post("/v1/chat/completions", json=body)
        assert resp.status_code == 200, resp.text
    async with gateway.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as streamed:
        assert streamed.status_code == 200
        assert "[DONE]" in "".join([chunk async for chunk in streamed.aiter_text()])
    assert (await gateway.post("/v1/embeddings", json={"model": "emb", "input": "fox"})).status_code == 200

    folder = tmp_path / "import"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 16)
    registry = services.model_registry
    started = await registry.post("/models/org/tiny/import", json={"path": str(folder), "model_type": "embedding"})
    assert started.status_code == 202, started.text

    async def done() -> bool:
        return (await registry.get(f"/jobs/{started.json()['id']}")).json()["state"] == "done"

    await poll(done, "the import to finish")
    # A download storing files right now, as the job runner's progress hook leaves it (no source here is
    # slow enough to catch one running): the progress panel reads it at the scrape.
    runner = services.model_registry_app.state.model_registry.jobs
    running = JobRecord(id=RUNNING_JOB, kind="download", model_id="org/big", state="running", bytes_done=300,
                        bytes_total=1200)
    runner.jobs[running.id] = running


def _seen(active: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(t["labels"]["job"], t["labels"]["instance"]) for t in active}


def _expected(jobs: dict[str, dict[str, Any]]) -> set[tuple[str, str]]:
    return {(name, target) for name, job in jobs.items() for g in groups(job) for target in g["targets"]}


async def every_target_up(prom: Prom, jobs: dict[str, dict[str, Any]]) -> None:
    async def all_up() -> list[dict[str, Any]] | None:
        active = await prom.targets()
        return active if _seen(active) == _expected(jobs) and all(t["health"] == "up" for t in active) else None

    for target in await prom.poll(all_up, "every target up"):
        job = jobs[target["labels"]["job"]]
        assert target["labels"]["service"] == groups(job)[0]["labels"]["service"]
        assert target["scrapeUrl"] == f"http://{target['labels']['instance']}{job.get('metrics_path', '/metrics')}"
    assert await prom.value('sum(up{job=~"gateway|service-registry|model-registry|workers"})') == len(_expected(jobs))


async def traffic_is_counted(prom: Prom, ports: dict[str, int]) -> None:
    """The chats show up on both sides of the gateway, with the labels the dashboard filters on."""
    for side in ("gateway", "worker"):
        expr = f'sum({side}_requests_total{{model="tiny", endpoint="/v1/chat/completions", status="200"}})'

        async def counted(expr: str = expr) -> bool:
            return await prom.value(expr) == CHATS + 1

        await prom.poll(counted, f"{expr} == {CHATS + 1}")
    assert await prom.value("sum(gateway_requests_total)") >= CHATS + 2
    chats = await prom.query('worker_requests_total{endpoint="/v1/chat/completions"}')
    assert [(r["metric"]["job"], r["metric"]["instance"], r["metric"]["service"]) for r in chats] == [
        ("workers", f"127.0.0.1:{ports['llm']}", "worker")]


def targets_of(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(expr, legendFormat) of every panel target, rows' collapsed panels included."""
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                yield target["expr"], target.get("legendFormat", "")


def grafana_variants(expr: str) -> list[str]:
    """An expression as Grafana sends it: ``$model`` as All, as one model and as two models."""
    expr = expr.replace("$__rate_interval", "30s")
    return [expr.replace("$model", value) for value in (".*", "tiny", "(tiny|emb)")] if "$model" in expr else [expr]


def render(legend: str, labels: dict[str, str]) -> str:
    return LEGEND_LABEL.sub(lambda m: labels[m[1]], legend)


async def dashboard_queries_work(prom: Prom) -> None:
    dashboard = json.loads(await asyncio.to_thread(DASHBOARD.read_text))
    panels = list(targets_of(dashboard))
    assert panels and {e for e, _ in panels} == {e for e in expressions(dashboard) if not e.startswith("label_")}
    for expr, _ in panels:
        for variant in grafana_variants(expr):
            await prom.query(variant)
    for name in MUST_HAVE_DATA:
        variants = [grafana_variants(e)[0] for e, _ in panels if re.search(rf"\b{name}\b", e)]
        assert variants, f"no dashboard panel shows {name}"

        async def some_data(variants: list[str] = variants) -> bool:
            return any([await prom.query(v) for v in variants])

        await prom.poll(some_data, f"data in a dashboard panel on {name}: {variants}")
    # Legends name labels the series carry (a label renamed on the way in shows as an empty legend).
    legends: dict[str, list[str]] = {}
    for expr, legend in panels:
        for series in await prom.query(grafana_variants(expr)[0]):
            missing = set(LEGEND_LABEL.findall(legend)) - set(series["metric"])
            assert not missing, f"legend {legend!r} of {expr}: no {sorted(missing)} on {series['metric']}"
            legends.setdefault(expr, []).append(render(legend, series["metric"]))
    # The running job's progress is labelled with its job id and model (not with the scrape job's name).
    [progress] = [e for e, _ in panels if "model_registry_job_progress_bytes" in e]
    assert legends[progress] == [f"org/big ({RUNNING_JOB})"]
    # The model variable's query, label_values(worker_model_loaded, model), lists both workers' models.
    resp = await prom.client.get("/api/v1/label/model/values", params={"match[]": "worker_model_loaded"})
    assert resp.status_code == 200 and {"tiny", "emb"} <= set(resp.json()["data"])


async def every_target_refused(prom: Prom, jobs: dict[str, dict[str, Any]]) -> None:
    async def all_refused() -> list[dict[str, Any]] | None:
        active = await prom.targets()
        refused = [t for t in active if t["health"] == "down" and "401" in t["lastError"]]
        return active if _seen(active) == _expected(jobs) and len(refused) == len(active) else None

    for target in await prom.poll(all_refused, "every target down with a 401"):
        assert WRONG not in target["lastError"] and SERVICE not in target["lastError"]
