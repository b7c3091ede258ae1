"""The gateway following a real service registry over real worker processes.

Workers (fake engine), the registry and an external OpenAI-compatible upstream are separate OS
processes on 127.0.0.1; the gateway runs in-process so tests can read its per-replica counters.
The processes are shared by the module; a test that kills one brings it back before it ends, and
each test first checks that the whole cluster is up. Waits are bounded loops on conditions.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.http import sse_events
from tests.helpers.polling import eventually, eventually_sync
from tests.helpers.processes import Proc, external_proc, healthy_in_registry, registry_proc, worker_proc
from tests.helpers.servers import gateway

pytestmark = pytest.mark.e2e  # real OS processes

KEY = "sk-test-3f9a1c77d2e04b8e"
MODEL = "m"
PROMPT = [{"role": "user", "content": "one two three"}]
POLL_S = 0.2
WORKER_ENV = {"WORKER_MAX_CONCURRENCY": "64", "WORKER_MAX_QUEUE": "256", "WORKER_FAKE_TOKEN_DELAY_S": "0.02",
              "WORKER_FAKE_MAX_MODEL_LEN": "100000"}


class Cluster:
    def __init__(self, log_dir: Path) -> None:
        self.external = external_proc(log_dir, KEY, "upstream-chat")
        self.statics = [{"id": "ext", "base_url": self.external.url, "api_key": KEY, "priority": 100,
                         "models": {"ext-chat": "upstream-chat", MODEL: "upstream-chat"}}]
        self.registry = registry_proc(log_dir, self.statics, poll_s=POLL_S)
        self.workers = {name: worker_proc(name, MODEL, self.registry.url, log_dir, **WORKER_ENV)
                        for name in ("wa", "wb")}

    @property
    def procs(self) -> list[Proc]:
        return [self.external, self.registry, *self.workers.values()]

    def ensure_up(self) -> None:
        """Start whatever is not running, then wait until the registry sees every service healthy."""
        for proc in self.procs:
            if not proc.alive:
                proc.start()
        for proc in self.procs:
            proc.wait_ready(headers={"authorization": f"Bearer {KEY}"})
        eventually_sync(healthy_in_registry(self.registry.url, ["ext", *self.workers]), "a healthy cluster")

    def by_url(self, url: str) -> Proc:
        return next(p for p in self.workers.values() if p.url == url)

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cluster-logs"))
    try:
        c.ensure_up()
        yield c
    finally:
        c.close()


def cluster_gateway(c: Cluster, **kw: Any):
    options = {"registry_url": c.registry.url, "probe_interval_s": POLL_S, "probe_timeout_s": 1.0,
               "static_upstreams": c.statics, "circuit_cooldown_s": 0.5, "read_timeout_s": 30.0}
    return gateway([], **{**options, **kw})


async def chat(client: httpx.AsyncClient, model: str = MODEL, **body: Any) -> httpx.Response:
    return await client.post("/v1/chat/completions", json={"model": model, "messages": PROMPT, "max_tokens": 3,
                                                           **body})


class Load:
    """``width`` clients sending non-streaming requests back to back until stopped; counts every outcome."""

    def __init__(self, client: httpx.AsyncClient, width: int) -> None:
        self.client, self.width = client, width
        self.outcomes: Counter[str] = Counter()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _one(self) -> None:
        while not self._stop.is_set():
            try:
                resp = await chat(self.client)
                self.outcomes[str(resp.status_code) if resp.status_code != 200 else "ok"] += 1
            except httpx.HTTPError as exc:
                self.outcomes[type(exc).__name__] += 1

    async def __aenter__(self) -> Load:
        self._tasks = [asyncio.create_task(self._one()) for _ in range(self.width)]
        return self

    async def __aexit__(self, *_: object) -> None:
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), timeout=30)

    async def until(self, ok_at_least: int) -> None:
        await eventually(lambda: self.outcomes["ok"] >= ok_at_least, f"{ok_at_least} answered requests", within_s=30)


def client_for(url: str, timeout: float = 30.0) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    return httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits, trust_env=False)


async def test_200_concurrent_requests_balance_over_two_equal_replicas(cluster: Cluster) -> None:
    cluster.ensure_up()
    async with cluster_gateway(cluster) as (url, state), client_for(url) as client:
        answers = await asyncio.gather(*(chat(client) for _ in range(200)))
        assert Counter(r.status_code for r in answers) == {200: 200}
        served = {w: state.metrics.served[p.url] for w, p in cluster.workers.items()}
        assert sum(served.values()) == 200, served
        assert max(served.values()) <= 120, served  # neither replica above 60%
        assert state.metrics.served[cluster.external.url + "/v1"] == 0  # lower priority: never needed
        print(f"balance split over 2 replicas: {served}")


async def test_kill_9_during_16_way_load_loses_no_request_and_the_replica_recovers(cluster: Cluster) -> None:
    cluster.ensure_up()
    victim = cluster.workers["wb"]
    async with cluster_gateway(cluster) as (url, state), client_for(url) as client:
        async with Load(client, width=16) as load:
            await load.until(ok_at_least=40)
            await eventually(lambda: state.in_flight.view().get(victim.url, 0) > 0, "a request in flight to the victim")
            victim.kill()  # requests in flight on it are cut; the gateway must retry them elsewhere
            before = load.outcomes["ok"]
            await load.until(ok_at_least=before + 80)
            victim.start()  # same port, re-registers under the same id
            await asyncio.to_thread(victim.wait_ready)  # off the loop: the load keeps running meanwhile
            served = state.metrics.served[victim.url]
            # Recovery: the gateway follows the registry's "healthy" within two poll intervals, and
            # a recovered replica's circuit is closed at once; bounded wait, no timing assertion.
            await eventually(lambda: state.metrics.served[victim.url] > served, "the restarted victim to serve",
                             within_s=15)
        assert set(load.outcomes) == {"ok"}, load.outcomes
        assert state.metrics.replica_failures.labels(victim.url, "unreachable")._value.get() >= 1 or \
            state.circuits.get(victim.url).failures_total >= 1


async def test_a_stream_cut_by_a_dying_worker_ends_with_one_error_event(cluster: Cluster) -> None:
    cluster.ensure_up()
    long_prompt = [{"role": "user", "content": " ".join(f"w{i}" for i in range(400))}]
    async with cluster_gateway(cluster) as (url, state), client_for(url) as client:
        body = {"model": MODEL, "messages": long_prompt, "max_tokens": 400, "stream": True}
        async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
            assert resp.status_code == 200
            lines = resp.aiter_lines()
            seen = [await anext(lines) for _ in range(6)]
            serving = [u for u, n in state.in_flight.view().items() if n]
            assert len(serving) == 1
            cluster.by_url(serving[0]).kill()
            async with asyncio.timeout(10):  # an error event and the end, not a hang
                seen += [line async for line in lines]
        events = sse_events("\n".join(seen) + "\n")
        errors = [e for e in events if isinstance(e, dict) and "error" in e]
        assert len(errors) == 1 and errors[0]["error"]["code"] == "upstream_error"
        assert events[-1] == errors[0]
    cluster.ensure_up()


async def test_registry_killed_and_restarted_during_load_fails_no_request(cluster: Cluster) -> None:
    cluster.ensure_up()
    async with cluster_gateway(cluster) as (url, _), client_for(url) as client:
        async with Load(client, width=8) as load:
            await load.until(ok_at_least=20)
            cluster.registry.kill()

            async def registry_down() -> bool:
                return (await client.get("/health")).json()["registry"]["reachable"] is False

            await eventually(registry_down, "the gateway to see the registry down")
            health = (await client.get("/health")).json()
            assert health["status"] == "degraded" and "last snapshot" in health["detail"]
            before = load.outcomes["ok"]
            await load.until(ok_at_least=before + 30)  # still routing from the last snapshot
            cluster.registry.start()
            await asyncio.to_thread(cluster.registry.wait_ready)
            await asyncio.to_thread(eventually_sync, healthy_in_registry(cluster.registry.url, ["ext", "wa", "wb"]),
                                    "workers re-registered")

            async def registry_back() -> bool:
                return (await client.get("/health")).json()["registry"]["reachable"] is True

            await eventually(registry_back, "the gateway to see the registry back")
            await load.until(ok_at_least=load.outcomes["ok"] + 30)
        assert set(load.outcomes) == {"ok"}, load.outcomes
        rows = (await client.get("/services")).json()["data"]
        assert {(r["service_id"], r["healthy"]) for r in rows} >= {("wa", True), ("wb", True)}


async def test_external_upstream_gets_the_key_and_its_model_name_and_the_key_never_leaks(cluster: Cluster) -> None:
    cluster.ensure_up()
    async with cluster_gateway(cluster) as (url, _), client_for(url) as client:
        resp = await chat(client, model="ext-chat")
        assert resp.status_code == 200, resp.text
        assert resp.json()["choices"][0]["message"]["content"] == "hello from the external upstream"
        async with client_for(cluster.external.url) as external:
            stats = (await external.get("/stats")).json()
        assert stats["authorized"] >= 1  # the upstream only answers with the right bearer key
        models = (await client.get("/v1/models")).json()["data"]
        assert {"ext-chat", MODEL} <= {m["id"] for m in models}
        rows = {r["service_id"]: r for r in (await client.get("/services")).json()["data"]
                if r["model"] == "ext-chat"}
        assert rows["ext"]["upstream_model"] == "upstream-chat" and rows["ext"]["kind"] == "external"
        answers = [resp] + [await client.get(p) for p in ("/services", "/health", "/v1/models", "/gpu-stats",
                                                          "/metrics")]
        async with client_for(cluster.registry.url) as registry:
            answers += [await registry.get(p) for p in ("/services", "/services/ext", "/health", "/gpu-stats",
                                                        "/metrics")]
        for answer in answers:
            assert KEY not in answer.text and KEY not in json.dumps(dict(answer.headers)), answer.request.url
