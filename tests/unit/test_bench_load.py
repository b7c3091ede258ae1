"""The benchmark's load generator spreads its clients over processes (scripts/bench_load.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_load


class Count:
    def __init__(self) -> None:
        self.n = 0

    def update(self, n: int) -> None:
        self.n += n


async def _one(client: object) -> bench_load.Sample:
    return bench_load.Sample(start=0.0, end=float(os.getpid()), items=1)


async def _broken(client: object) -> bench_load.Sample:
    raise ValueError("no server here")


def test_more_clients_than_one_process_drives_run_in_several_and_every_sample_comes_back() -> None:
    bar = Count()
    clients = bench_load.CLIENTS_PER_PROCESS + 3
    samples = bench_load.run_level(_one, clients, 2, bar)
    assert len(samples) == bar.n == clients * 2
    pids = {int(s.end) for s in samples}  # each sample carries the pid of the process that made it
    assert len(pids) == 2 and os.getpid() not in pids


def test_up_to_one_process_worth_of_clients_runs_here() -> None:
    samples = bench_load.run_level(_one, 3, 1, Count())
    assert {int(s.end) for s in samples} == {os.getpid()}


def test_a_failing_load_generator_process_fails_the_level() -> None:
    with pytest.raises(RuntimeError, match="ValueError: no server here"):
        bench_load.run_level(_broken, bench_load.CLIENTS_PER_PROCESS + 1, 1, Count())


async def test_unique_prompts_differ_from_the_first_token_and_the_default_ones_do_not() -> None:
    import json

    import httpx

    sent: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content)["messages"][0]["content"])
        return httpx.Response(200, text='data: {"choices": [{"delta": {"content": "hi"}}]}\n\ndata: [DONE]\n\n')

    async with httpx.AsyncClient(transport=httpx.MockTransport(server)) as client:
        for unique in (False, False, True, True):
            sample = await bench_load.chat_once(client, "http://bench", "m", 4, unique=unique)
            assert sample.error is None and sample.ttft is not None
    assert sent[0] == sent[1] == bench_load.CHAT_WORDS
    assert sent[2] != sent[3] and sent[2].startswith("Request ") and sent[2].endswith(bench_load.CHAT_WORDS)
