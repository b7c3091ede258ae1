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
