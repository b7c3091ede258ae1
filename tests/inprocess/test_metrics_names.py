"""Every service's /metrics says what docs/MONITORING.md promises: the agreed names and label names, and
counts that move with the traffic sent. Real apps (the worker with its fake engine), real HTTP where a
service calls another, the exposition text parsed with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from common.metrics import GPUCollector
from common.records import GPUInfo, GPUStats, HostInfo, WorkerHealth
from model_registry.records import JobRecord
from model_service.app import create_app as create_worker_app
from model_service.settings import WorkerSettings
from service_registry.app import create_app as create_registry_app
from service_registry.settings import RegistrySettings
from tests.helpers.http import sse_events
from tests.helpers.model_registry import registry_client, registry_settings, wait_job
from tests.helpers.polling import eventually
from tests.helpers.servers import gateway, serve
from tests.helpers.workers import WorkerClientFactory, worker, worker_client_for

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "count the words in this line"}]
MiB = 2**20


class Scrape:
    """One /metrics answer, by sample name."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[str, list[Sample]] = defaultdict(list)
        self.families: set[str] = set()
        for family in text_string_to_metric_families(text):
            self.families.add(family.name)
            for sample in family.samples:
                self.samples[sample.name].append(sample)

    def labels_of(self, name: str) -> set[frozenset[str]]:
        """The label-name sets the samples called ``name`` carry (``le`` of buckets aside)."""
        return {frozenset(k for k in s.labels if k != "le") for s in self.samples[name]}

    def value(self, name: str, **labels: str) -> float:
        """The sum over the samples called ``name`` whose labels include ``labels``."""
        return sum(s.value for s in self.samples[name] if labels.items() <= s.labels.items())

    def assert_labels(self, name: str, *labels: str) -> None:
        """``name`` (a sample name: ``_total``, ``_count``, a gauge) exists, always with these labels."""
        assert self.samples[name], f"{name} is not exported"
        assert self.labels_of(name) == {frozenset(labels)}, f"{name}: labels {self.labels_of(name)}"


async def scrape(client: httpx.AsyncClient, url: str = "/metrics") -> Scrape:
    resp = await client.get(url)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain"), resp.text
    return Scrape(resp.text)


# --- worker -------------------------------------------------------------------------------------------

async def test_worker_metrics_names_labels_and_counts(worker_client: WorkerClientFactory) -> None:
    async with worker_client() as client:
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        for _ in range(3):
            resp = await client.post(CHAT, json={"messages": HELLO, "temperature": 0})
            assert resp.status_code == 200, resp.text
            for key in usage:
                usage[key] += resp.json()["usage"][key]
        for _ in range(2):
            resp = await client.post(CHAT, json={"messages": HELLO, "stream": True,
                                                 "stream_options": {"include_usage": True}})
            assert resp.status_code == 200, resp.text
            last = [e for e in sse_events(resp.text) if e != "[DONE]"][-1]
            for key in usage:
                usage[key] += last["usage"][key]
        resp = await client.post("/v1/completions", json={"prompt": "one two three", "stream": True,
                                                          "stream_options": {"include_usage": True}})
        assert resp.status_code == 200, resp.text
        last = [e for e in sse_events(resp.text) if e != "[DONE]"][-1]
        for key in usage:
            usage[key] += last["usage"][key]
        assert (await client.post(CHAT, json={"model": "other", "messages": HELLO})).status_code == 404
        gpu = (await client.get("/gpu-stats")).json()
        m = await scrape(client)

    m.assert_labels("worker_requests_total", "model", "endpoint", "status")
    m.assert_labels("worker_request_duration_seconds_count", "model", "endpoint")
    m.assert_labels("worker_time_to_first_token_seconds_count", "model")
    for name in ("worker_prompt_tokens_total", "worker_completion_tokens_total", "worker_queue_depth",
                 "worker_in_flight_requests", "worker_model_loaded", "worker_batch_size_count"):
        m.assert_labels(name, "model")

    model = "fake-model"
    assert m.value("worker_requests_total", model=model, endpoint=CHAT, status="200") == 5
    assert m.value("worker_requests_total", model=model, endpoint=CHAT, status="404") == 1
    assert m.value("worker_requests_total", model=model, endpoint="/v1/completions", status="200") == 1
    assert m.value("worker_request_duration_seconds_count", model=model, endpoint=CHAT) == 6
    # Operator routes polled every few seconds are not traffic.
    assert {s.labels["endpoint"] for s in m.samples["worker_requests_total"]} == {CHAT, "/v1/completions"}
    assert m.value("worker_time_to_first_token_seconds_count", model=model) == 3  # the streamed ones
    assert m.value("worker_prompt_tokens_total", model=model) == usage["prompt_tokens"] > 0
    assert m.value("worker_completion_tokens_total", model=model) == usage["completion_tokens"] > 0
    assert m.value("worker_model_loaded", model=model) == 1
    assert m.value("worker_queue_depth", model=model) == m.value("worker_in_flight_requests", model=model) == 0

    gpu_names = ("worker_gpu_utilization_ratio", "worker_gpu_memory_used_bytes", "worker_gpu_memory_total_bytes",
                 "worker_gpu_temperature_celsius")
    if gpu["available"]:
        for name in gpu_names:
            m.assert_labels(name, "gpu")
    else:  # no GPU here: the gauges are simply absent, and the scrape still worked
        assert not any(name in m.families for name in gpu_names)


async def test_embedding_worker_counts_prompt_tokens(worker_client: WorkerClientFactory) -> None:
    async with worker_client(model_type="embedding", model_name="fake-emb") as client:
        resp = await client.post("/v1/embeddings", json={"input": ["a b c", "d e"]})
        assert resp.status_code == 200, resp.text
        m = await scrape(client)
    assert m.value("worker_requests_total", model="fake-emb", endpoint="/v1/embeddings", status="200") == 1
    assert m.value("worker_prompt_tokens_total", model="fake-emb") == resp.json()["usage"]["prompt_tokens"] == 5


async def test_real_embedding_batches_are_observed(worker_embedding_engine) -> None:
    settings = WorkerSettings(_env_file=None, model_name="minilm", model_type="embedding", model_path="unused")
    async with worker_client_for(settings, worker_embedding_engine) as client:
        calls = worker_embedding_engine.encode_calls
        resp = await client.post("/v1/embeddings", json={"input": ["one sentence", "and another", "a third"]})
        assert resp.status_code == 200, resp.text
        m = await scrape(client)
        encodes = worker_embedding_engine.encode_calls - calls
    assert m.value("worker_batch_size_count", model="minilm") == encodes >= 1
    assert m.value("worker_batch_size_sum", model="minilm") == 3  # every input, in however many encodes
    assert m.value("worker_prompt_tokens_total", model="minilm") == resp.json()["usage"]["prompt_tokens"]


def test_gpu_collector_reports_what_nvml_read_in_base_units() -> None:
    host = HostInfo(cpu_count=1, cpu_percent=0.0, memory_used_mb=1.0, memory_total_mb=2.0)
    stats = GPUStats(available=True, host=host, gpus=[
        GPUInfo(index=0, name="A", utilization_percent=42.0, memory_used_mb=1024.0, memory_total_mb=8192.0,
                temperature_c=61.0),
        GPUInfo(index=1, name="B", error="NVML: not supported"),  # a reading that failed is left out
    ])
    samples = {s.name: s for f in GPUCollector("worker", read=lambda: stats).collect() for s in f.samples}
    assert samples["worker_gpu_utilization_ratio"].value == pytest.approx(0.42)
    assert samples["worker_gpu_memory_used_bytes"].value == 1024 * MiB
    assert samples["worker_gpu_memory_total_bytes"].value == 8192 * MiB
    assert samples["worker_gpu_temperature_celsius"].value == 61.0
    assert all(s.labels == {"gpu": "0"} for s in samples.values())
    absent = GPUStats(available=False, reason="no GPU", host=host)
    assert list(GPUCollector("worker", read=lambda: absent).collect()) == []


# --- service registry ---------------------------------------------------------------------------------

def gpu_worker(model: str) -> FastAPI:
    """A stand-in worker on a GPU host: healthy, one GPU with known readings."""
    app = FastAPI()
    stats = GPUStats(available=True, driver_version="550.0", gpus=[
        GPUInfo(index=0, name="Test GPU", utilization_percent=37.0, memory_used_mb=2048.0,
                memory_total_mb=16384.0, temperature_c=55.0)])

    @app.get("/health")
    async def health() -> WorkerHealth:
        return WorkerHealth(status="ok", model=model, type="llm", engine="stub")

    @app.get("/gpu-stats")
    async def gpu_stats() -> GPUStats:
        return stats

    return app


async def test_service_registry_metrics_from_its_snapshot() -> None:
    settings = RegistrySettings(_env_file=None, poll_interval_s=0.2, probe_timeout_s=1.0, unhealthy_after=1,
                                healthy_after=1)
    async with AsyncExitStack() as stack:
        fake = await stack.enter_async_context(serve(create_worker_app(
            WorkerSettings(_env_file=None, engine="fake", model_name="chat", model_type="llm"))))
        gpu = await stack.enter_async_context(serve(gpu_worker("big")))
        registry = await stack.enter_async_context(serve(create_registry_app(settings)))
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=registry, timeout=5, trust_env=False))
        gone = "http://127.0.0.1:9"  # nothing listens there
        for url, model in ((fake, "chat"), (gpu, "big"), (gone, "gone")):
            resp = await client.post("/register", json={"url": url, "models": [model], "type": "llm"})
            assert resp.status_code == 201, resp.text

        async def settled() -> bool:
            rows = {s["url"]: s for s in (await client.get("/services")).json()["data"]}
            return (rows[fake]["status"] == rows[gpu]["status"] == "healthy" and rows[gone]["status"] == "unhealthy"
                    and bool(rows[gpu]["gpus"]))

        await eventually(settled, "the registry's probes to settle")
        m = await scrape(client)

    m.assert_labels("service_registry_services", "status", "kind")
    m.assert_labels("service_registry_replica_healthy", "replica", "model")
    m.assert_labels("service_registry_probe_duration_seconds_count", "replica")
    m.assert_labels("service_registry_probe_failures_total", "replica")
    m.assert_labels("service_registry_registrations_total", "event")
    for name in ("service_registry_gpu_utilization_ratio", "service_registry_gpu_memory_used_bytes",
                 "service_registry_gpu_memory_total_bytes", "service_registry_gpu_temperature_celsius"):
        m.assert_labels(name, "replica", "gpu")

    assert m.value("service_registry_services", status="healthy", kind="worker") == 2
    assert m.value("service_registry_services", status="unhealthy", kind="worker") == 1
    assert m.value("service_registry_replica_healthy", replica=fake, model="chat") == 1
    assert m.value("service_registry_replica_healthy", replica=gpu, model="big") == 1
    assert m.value("service_registry_replica_healthy", replica=gone, model="gone") == 0
    assert m.value("service_registry_probe_failures_total", replica=gone) >= 1
    assert m.value("service_registry_probe_failures_total", replica=fake) == 0
    assert m.value("service_registry_probe_duration_seconds_count", replica=fake) >= 1
    assert m.value("service_registry_registrations_total", event="registered") == 3
    assert m.value("service_registry_poll_rounds_total") >= 1
    # The GPU readings the last round collected, in base units; the fake worker has no GPU: no series.
    assert m.value("service_registry_gpu_utilization_ratio", replica=gpu, gpu="0") == pytest.approx(0.37)
    assert m.value("service_registry_gpu_memory_used_bytes", replica=gpu, gpu="0") == 2048 * MiB
    assert m.value("service_registry_gpu_memory_total_bytes", replica=gpu, gpu="0") == 16384 * MiB
    assert m.value("service_registry_gpu_temperature_celsius", replica=gpu, gpu="0") == 55.0
    assert {s.labels["replica"] for s in m.samples["service_registry_gpu_utilization_ratio"]} == {gpu}


async def test_service_registry_request_counts() -> None:
    settings = RegistrySettings(_env_file=None, poll_interval_s=60, probe_timeout_s=0.5)
    async with AsyncExitStack() as stack:
        registry = await stack.enter_async_context(serve(create_registry_app(settings)))
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=registry, timeout=5, trust_env=False))
        worker = {"id": "w1", "url": "http://127.0.0.1:9", "models": ["m"], "type": "llm"}
        assert (await client.post("/register", json=worker)).status_code == 201
        assert (await client.post("/register/w1/heartbeat")).status_code == 200
        assert (await client.get("/services")).status_code == 200
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/no-such-route")).status_code == 404
        m = await scrape(client)

    m.assert_labels("service_registry_requests_total", "endpoint", "status")
    m.assert_labels("service_registry_request_duration_seconds_count", "endpoint")
    heartbeat = "/register/{service_id:path}/heartbeat"  # the route template, never the id a worker sent
    assert m.value("service_registry_requests_total", endpoint="/register", status="201") == 1
    assert m.value("service_registry_requests_total", endpoint=heartbeat, status="200") == 1
    assert m.value("service_registry_requests_total", endpoint="/services", status="200") == 1
    assert m.value("service_registry_requests_total", endpoint="unmatched", status="404") == 1
    assert m.value("service_registry_request_duration_seconds_count", endpoint="/services") == 1
    # Health checks and scrapes are polled all the time: not traffic.
    assert {s.labels["endpoint"] for s in m.samples["service_registry_requests_total"]} == {
        "/register", heartbeat, "/services", "unmatched"}


# --- model registry -----------------------------------------------------------------------------------

async def test_model_registry_metrics_jobs_progress_and_store(tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    size = sum(p.stat().st_size for p in folder.iterdir())
    async with registry_client(registry_settings("local", tmp_path)) as (app, client):
        resp = await client.post("/models/org/tiny/import", json={"path": str(folder), "model_type": "embedding"})
        assert resp.status_code == 202, resp.text
        assert (await wait_job(client, resp.json()["id"]))["state"] == "done"
        file = await client.get("/models/org/tiny/revisions/current/files/config.json")
        assert file.status_code == 200
        # A job storing files right now, as its progress hook leaves it: the gauges read it live.
        runner = app.state.model_registry.jobs
        running = JobRecord(id="f" * 32, kind="download", model_id="org/big", state="running",
                            bytes_done=300, bytes_total=1200)
        runner.jobs[running.id] = running
        try:
            m = await scrape(client)
        finally:
            del runner.jobs[running.id]
        after = await scrape(client)

    m.assert_labels("model_registry_jobs", "state")
    m.assert_labels("model_registry_job_progress_bytes", "job_id", "model")
    m.assert_labels("model_registry_job_total_bytes", "job_id", "model")
    for name in ("model_registry_models", "model_registry_stored_bytes", "model_registry_files_served_total"):
        m.assert_labels(name)
    assert m.value("model_registry_jobs", state="done") == 1
    assert m.value("model_registry_jobs", state="running") == 1
    assert m.value("model_registry_job_progress_bytes", job_id="f" * 32, model="org/big") == 300
    assert m.value("model_registry_job_total_bytes", job_id="f" * 32, model="org/big") == 1200
    assert m.value("model_registry_models") == 1
    assert m.value("model_registry_stored_bytes") == size
    assert m.value("model_registry_files_served_total") == 1
    # Finished jobs leave the progress gauges.
    assert not after.samples["model_registry_job_progress_bytes"]
    assert "model_registry_job_progress_bytes" in after.families


async def test_model_registry_request_counts(tmp_path: Path) -> None:
    async with registry_client(registry_settings("local", tmp_path)) as (_, client):
        assert (await client.get("/models")).status_code == 200
        m = await scrape(client)
    assert "model_registry_requests" in m.families or "model_registry_requests_total" in m.families
    m.assert_labels("model_registry_requests_total", "endpoint", "status")
    assert m.value("model_registry_requests_total", endpoint="/models", status="200") == 1


# --- gateway ------------------------------------------------------------------------------------------

GATEWAY_MODEL = "chat"
SENT = 4  # chat completions through the gateway: half of them streamed


async def _gateway_traffic() -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        worker_url, _ = await stack.enter_async_context(worker(GATEWAY_MODEL))
        url, _ = await stack.enter_async_context(gateway([worker_url]))
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=15, trust_env=False))
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        for i in range(SENT):
            body: dict[str, Any] = {"model": GATEWAY_MODEL, "messages": HELLO}
            if i % 2:
                body |= {"stream": True, "stream_options": {"include_usage": True}}
            resp = await client.post(CHAT, json=body)
            assert resp.status_code == 200, resp.text
            answer = [e for e in sse_events(resp.text) if e != "[DONE]"][-1] if i % 2 else resp.json()
            for key in usage:
                usage[key] += answer["usage"][key]
        return {"gateway": await scrape(client), "worker": await scrape(client, f"{worker_url}/metrics"),
                "usage": usage, "worker_url": worker_url}


@pytest.fixture(scope="module")
def gateway_run() -> dict[str, Any]:
    """One gateway in front of one fake worker, a few requests, both scraped (once for every test here)."""
    return asyncio.run(_gateway_traffic())


# Families with the label names of their series (None: only the family is checked, it may have no series).
GATEWAY_METRICS = [
    ("gateway_requests_total", ("model", "endpoint", "status")),
    ("gateway_request_duration_seconds", ("model", "endpoint")),
    ("gateway_time_to_first_token_seconds", ("model",)),
    ("gateway_prompt_tokens_total", ("model",)),
    ("gateway_completion_tokens_total", ("model",)),
    ("gateway_in_flight_requests", ("model",)),
    ("gateway_replica_healthy", ("replica", "model")),
    ("gateway_circuit_state", ("replica",)),
    ("gateway_upstream_retries_total", None),
    ("gateway_rate_limited_total", None),
]


def _series(m: Scrape, name: str) -> str:
    """The series name that carries a family's labels (a histogram's ``_count``)."""
    return f"{name}_count" if f"{name}_count" in m.samples else name


@pytest.mark.parametrize(("name", "labels"), GATEWAY_METRICS)
def test_gateway_exports(gateway_run: dict[str, Any], name: str, labels: tuple[str, ...] | None) -> None:
    m: Scrape = gateway_run["gateway"]
    assert name in m.families or name.removesuffix("_total") in m.families, f"{name} is not exported"
    if labels is not None:
        m.assert_labels(_series(m, name), *labels)


def test_gateway_counts_match_the_worker(gateway_run: dict[str, Any]) -> None:
    g: Scrape = gateway_run["gateway"]
    w: Scrape = gateway_run["worker"]
    assert g.value("gateway_requests_total", model=GATEWAY_MODEL, endpoint=CHAT, status="200") == SENT
    assert g.value("gateway_request_duration_seconds_count", model=GATEWAY_MODEL, endpoint=CHAT) == SENT
    assert g.value("gateway_in_flight_requests", model=GATEWAY_MODEL) == 0
    assert g.value("gateway_circuit_state", replica=gateway_run["worker_url"]) == 0  # closed
    assert w.value("worker_requests_total", model=GATEWAY_MODEL, endpoint=CHAT, status="200") == SENT
    assert w.value("worker_time_to_first_token_seconds_count", model=GATEWAY_MODEL) == SENT // 2
    assert w.value("worker_prompt_tokens_total", model=GATEWAY_MODEL) == gateway_run["usage"]["prompt_tokens"]
    assert w.value("worker_completion_tokens_total", model=GATEWAY_MODEL) == \
        gateway_run["usage"]["completion_tokens"]


def test_gateway_token_counts_match_the_usage(gateway_run: dict[str, Any]) -> None:
    g: Scrape = gateway_run["gateway"]
    assert g.value("gateway_prompt_tokens_total", model=GATEWAY_MODEL) == gateway_run["usage"]["prompt_tokens"]
    assert g.value("gateway_completion_tokens_total", model=GATEWAY_MODEL) == \
        gateway_run["usage"]["completion_tokens"]
    assert g.value("gateway_time_to_first_token_seconds_count", model=GATEWAY_MODEL) == SENT // 2
    assert g.value("gateway_replica_healthy", replica=gateway_run["worker_url"], model=GATEWAY_MODEL) == 1
