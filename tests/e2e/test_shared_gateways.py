"""Two gateway processes in front of one worker, sharing one real redis-server (issue 19's must-show).

Everything is a real OS process on loopback: redis-server, a fake-engine worker, and two gateways with
auth on, each with its own key file and usage log and the same ``GATEWAY_REDIS_URL``. Clients are the
real ``openai`` SDK. A key made on one gateway is used on both; a burst over its rpm split across
both admits exactly the limit; a revocation on one is refused on the other within a bounded number of
short polls (the one-second bound); ``GET /usage`` on either covers both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.helpers.auth import ADMIN, ADMIN_KEY, SERVICE, SERVICE_TOKEN, bearer
from tests.helpers.polling import eventually_sync
from tests.helpers.ports import free_port
from tests.helpers.processes import Proc, python_m
from tests.helpers.redis_server import RedisServer, redis_server

pytestmark = pytest.mark.e2e  # real OS processes

MODEL = "m"
PROMPT = [{"role": "user", "content": "one two three"}]
POLL_S = 0.05
# GATEWAY_REDIS_SYNC_INTERVAL_S is 0.2 s: a revocation must show on the other gateway within a second,
# that is within this many polls POLL_S apart (each poll also takes a round trip, so this bound is
# looser than a second only by those round trips).
POLLS_WITHIN_A_SECOND = int(1.0 / POLL_S)


@dataclass
class Pair:
    redis: RedisServer
    worker: Proc
    gateways: list[Proc]

    def admin(self, index: int) -> httpx.Client:
        return httpx.Client(base_url=self.gateways[index].url, headers=ADMIN, timeout=15, trust_env=False)

    def sdk(self, index: int, key: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.gateways[index].url}/v1", api_key=key, max_retries=0,
                                  timeout=15)


AUTH_ENV = {"MODEL_SERVICE_AUTH": "true", "MODEL_SERVICE_ADMIN_KEY": ADMIN_KEY,
            "MODEL_SERVICE_SERVICE_TOKEN": SERVICE_TOKEN}


def gateway_proc(name: str, folder: Path, worker: Proc, redis_url: str) -> Proc:
    port = free_port()
    (folder / name).mkdir()
    env = {**AUTH_ENV, "GATEWAY_REDIS_URL": redis_url, "GATEWAY_KEYS_FILE": str(folder / name / "keys.json"),
           "GATEWAY_USAGE_LOG": str(folder / name / "usage.log"),
           # A busy test machine must not make a slow answer read as a store that is down.
           "GATEWAY_REDIS_TIMEOUT_S": "5"}
    argv = python_m("stack", "gateway", "--port", str(port), "--workers", worker.url, "--log-level", "warning")
    return Proc(name, argv, env, port, folder)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    folder = tmp_path_factory.mktemp("shared-gateways")
    with redis_server(folder) as redis:
        port = free_port()
        worker = Proc("worker", python_m("stack", "worker", "--engine", "fake", "--port", str(port), "--model-name",
                                         MODEL, "--log-level", "warning"), AUTH_ENV, port, folder)
        gateways = [gateway_proc(name, folder, worker, redis.url) for name in ("gw-a", "gw-b")]
        procs = [worker, *gateways]
        try:
            for proc in procs:
                proc.start()
            worker.wait_ready(headers=SERVICE)
            for proc in gateways:
                proc.wait_ready()
                eventually_sync(lambda url=proc.url: serves_model(url), f"{proc.name} routing to the worker",
                                within_s=30.0, every_s=0.2)
            yield Pair(redis, worker, gateways)
        finally:
            for proc in procs:
                proc.stop()


def serves_model(url: str) -> bool:
    """The gateway has probed the worker and routes to it (before that it answers 503)."""
    resp = httpx.get(f"{url}/v1/models", headers=ADMIN, timeout=5, trust_env=False)
    return resp.status_code == 200 and MODEL in {m["id"] for m in resp.json()["data"]}


def create_key(pair: Pair, **body: Any) -> dict[str, Any]:
    """A key made on gateway A, once gateway B accepts it too (listing models takes nothing from it)."""
    with pair.admin(0) as admin:
        resp = admin.post("/admin/keys", json=body)
    assert resp.status_code == 201, resp.text
    made = resp.json()

    def known_on_b() -> bool:
        resp = httpx.get(f"{pair.gateways[1].url}/v1/models", headers=bearer(made["key"]), timeout=5, trust_env=False)
        return resp.status_code == 200

    eventually_sync(known_on_b, "the new key on gateway B", within_s=5.0, every_s=POLL_S)
    return made


async def chat(client: openai.AsyncOpenAI) -> Any:
    return await client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=3)


async def test_a_burst_split_across_both_gateways_admits_exactly_the_rpm(pair: Pair) -> None:
    key = create_key(pair, name="burst", rpm=6)["key"]
    clients = [pair.sdk(0, key), pair.sdk(1, key)]
    outcomes = await asyncio.gather(*(chat(clients[i % 2]) for i in range(16)), return_exceptions=True)
    admitted = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
    # One request comes back every 10 s at 6 per minute: the whole burst ends long before that.
    assert len(admitted) == 6 and len(refused) == 10, outcomes
    assert int(refused[0].response.headers["retry-after"]) >= 1
    assert refused[0].response.headers["x-ratelimit-limit-requests"] == "6"
    assert refused[0].code == "rate_limit_exceeded"
    for client in clients:
        await client.close()


async def test_a_key_revoked_on_one_gateway_is_refused_on_the_other_within_a_second(pair: Pair) -> None:
    made = create_key(pair, name="leaver")
    other = pair.sdk(1, made["key"])
    assert (await chat(other)).choices[0].message.content
    with pair.admin(0) as admin:
        assert admin.delete(f"/admin/keys/{made['id']}").json()["revoked_at"]
    polls = 0
    while polls < POLLS_WITHIN_A_SECOND:
        polls += 1
        try:
            await chat(other)
        except openai.AuthenticationError:
            break
        await asyncio.sleep(POLL_S)
    else:
        pytest.fail(f"gateway B still admitted the revoked key after {polls} polls {POLL_S} s apart")
    with pytest.raises(openai.AuthenticationError):  # and it stays refused
        await chat(other)
    lists = []
    for index in (0, 1):  # both lists show the one revocation, with the time it was made
        with pair.admin(index) as admin:
            lists.append({k["id"]: k["revoked_at"] for k in admin.get("/admin/keys").json()["data"]})
    assert lists[0][made["id"]] is not None and lists[0][made["id"]] == lists[1][made["id"]]
    await other.close()


async def test_usage_on_either_gateway_covers_both(pair: Pair) -> None:
    made = create_key(pair, name="counted")
    for index, count in ((0, 2), (1, 3)):
        client = pair.sdk(index, made["key"])
        for _ in range(count):
            await chat(client)
        await client.close()

    def both_cover_five() -> list[dict[str, Any]] | None:
        answers = []
        for index in (0, 1):
            with pair.admin(index) as admin:
                summary = admin.get("/usage").json()
            row = summary["by_key"].get(made["id"], {})
            if summary.get("scope") != "all gateways" or row.get("requests") != 5:
                return None
            answers.append(row)
        return answers

    # Gateway B's own last lines reach the store within its 0.2 s flush; A's summary flushes A's first.
    rows = eventually_sync(both_cover_five, "GET /usage on both gateways counting all 5 requests", within_s=5.0,
                           every_s=POLL_S)
    assert rows[0] == rows[1] and rows[0]["errors"] == 0 and rows[0]["total_tokens"] > 0
