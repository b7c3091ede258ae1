"""Load generators and baselines for ``scripts/bench.py``: streaming chat and embedding clients over
httpx, the in-process ceilings (static ``generate()``, raw ``encode``), and loopback server processes.

Every client records wall-clock stamps only; figures are computed afterwards from the samples, so a
slow client loop never changes what the server is credited with.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

CHAT_WORDS = ("Tell me a long and detailed story about a lighthouse keeper who finds a message in a bottle "
              "on a stormy night, describing the sea, the weather, the old lamp, the letters, the village "
              "and the people who live there, and what happens next.")
SENTENCE = "The quick brown fox jumps over the lazy dog near the quiet river bank at dawn."


_REQUEST_NUMBERS = itertools.count(random.randrange(10**6, 10**7))  # with the pid: unique per process and run


@dataclass
class Sample:
    start: float
    end: float
    ttft: float | None = None
    gaps: list[float] = field(default_factory=list)
    tokens: int = 0
    items: int = 0
    error: str | None = None


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def wall_of(samples: list[Sample]) -> float:
    return (max(s.end for s in samples) - min(s.start for s in samples)) if samples else 0.0


def summarize(samples: list[Sample], wall: float | None = None) -> dict[str, Any]:
    """Aggregate figures for one concurrency level (times in ms, rates per second of wall time).

    ``wall`` is given when the samples come from several rounds: the sum of the rounds' wall times.
    """
    ok = [s for s in samples if s.error is None]
    wall = wall_of(samples) if wall is None else wall
    lat = [(s.end - s.start) * 1000 for s in ok]
    ttft = [s.ttft * 1000 for s in ok if s.ttft is not None]
    gaps = [g * 1000 for s in ok for g in s.gaps]
    return {
        "requests": len(samples), "errors": len(samples) - len(ok), "wall_s": round(wall, 3),
        "requests_per_s": round(len(ok) / wall, 3) if wall else None,
        "output_tokens_per_s": round(sum(s.tokens for s in ok) / wall, 2) if wall else None,
        "items_per_s": round(sum(s.items for s in ok) / wall, 2) if wall else None,
        **{f"latency_p{q}_ms": _r(pct(lat, q)) for q in (50, 95, 99)},
        **{f"ttft_p{q}_ms": _r(pct(ttft, q)) for q in (50, 95, 99)},
        "itl_p50_ms": _r(pct(gaps, 50)), "itl_p95_ms": _r(pct(gaps, 95)),
        "error_kinds": sorted({s.error for s in samples if s.error}),
    }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


async def chat_once(client: httpx.AsyncClient, base: str, model: str, max_tokens: int,
                    unique: bool = False) -> Sample:
    """One streamed chat completion: TTFT, the gaps between content chunks, and usage tokens.

    Every request sends the same prompt unless ``unique``: then the user message starts with a
    request number of its own, so an engine's prompt cache (llama.cpp's per-slot cache, vLLM's prefix
    caching) can reuse no more than the chat template's shared system part, as with real traffic."""
    content = f"Request {os.getpid()}-{next(_REQUEST_NUMBERS)}. {CHAT_WORDS}" if unique else CHAT_WORDS
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    sample = Sample(start=time.perf_counter(), end=0.0)
    last: float | None = None
    try:
        async with client.stream("POST", f"{base}/v1/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                await resp.aread()
                sample.error = f"http {resp.status_code}"
            else:
                async for line in resp.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[6:])
                    if event.get("usage"):
                        sample.tokens = event["usage"]["completion_tokens"]
                    choices = event.get("choices") or []
                    if choices and choices[0].get("delta", {}).get("content"):
                        now = time.perf_counter()
                        if last is None:
                            sample.ttft = now - sample.start
                        else:
                            sample.gaps.append(now - last)
                        last = now
                    if "error" in event:
                        sample.error = "stream error"
    except httpx.HTTPError as exc:
        sample.error = type(exc).__name__
    sample.end = time.perf_counter()
    return sample


async def embed_once(client: httpx.AsyncClient, base: str, model: str) -> Sample:
    sample = Sample(start=time.perf_counter(), end=0.0)
    try:
        resp = await client.post(f"{base}/v1/embeddings", json={"model": model, "input": SENTENCE})
        if resp.status_code == 200:
            sample.items = len(resp.json()["data"])
        else:
            sample.error = f"http {resp.status_code}"
    except httpx.HTTPError as exc:
        sample.error = type(exc).__name__
    sample.end = time.perf_counter()
    return sample


async def fake_chat_once(client: httpx.AsyncClient, base: str, model: str) -> Sample:
    """A small non-streamed chat request against the fake engine: the gateway's own cost shows."""
    body = {"model": model, "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 4}
    sample = Sample(start=time.perf_counter(), end=0.0)
    try:
        resp = await client.post(f"{base}/v1/chat/completions", json=body)
        sample.error = None if resp.status_code == 200 else f"http {resp.status_code}"
        sample.items = 1
    except httpx.HTTPError as exc:
        sample.error = type(exc).__name__
    sample.end = time.perf_counter()
    return sample


# One asyncio + httpx process drives at most this many clients. Past that the load generator, not the
# server, sets the rate: one process with 64 clients delivered 122 embeddings/s to a worker that
# served 240-270/s to two processes of 32 (same machine, same run), because every response costs the
# client's event loop and httpx's connection pool work that grows with the number of connections.
CLIENTS_PER_PROCESS = 32


def sweep_level(one: Any, concurrency: int, per_client: int, bar: Any) -> dict[str, Any]:
    """``concurrency`` clients, each sending ``per_client`` requests back to back."""
    return {"concurrency": concurrency, **summarize(run_level(one, concurrency, per_client, bar))}


def run_level(one: Any, concurrency: int, per_client: int, bar: Any) -> list[Sample]:
    """The samples of ``concurrency`` clients, each sending ``per_client`` requests back to back, spread
    over as few processes as ``CLIENTS_PER_PROCESS`` allows (forked, so ``one`` may be any callable;
    their ``perf_counter`` stamps share the system's monotonic clock, so one wall time covers all)."""
    shares = [min(CLIENTS_PER_PROCESS, concurrency - start) for start in range(0, concurrency, CLIENTS_PER_PROCESS)]
    if len(shares) <= 1:
        return asyncio.run(_clients(one, concurrency, per_client, bar.update))
    ctx = multiprocessing.get_context("fork")
    results: Any = ctx.Queue()
    procs = [ctx.Process(target=_client_process, args=(one, n, per_client, results), daemon=True) for n in shares]
    for proc in procs:
        proc.start()
    samples: list[Sample] = []
    failures = []
    for _ in procs:
        part = results.get()
        if isinstance(part, str):
            failures.append(part)
            continue
        samples += part
        bar.update(len(part))
    for proc in procs:
        proc.join()
    if failures:
        raise RuntimeError(f"a load generator process failed: {failures[0]}")
    return samples


def _client_process(one: Any, concurrency: int, per_client: int, results: Any) -> None:
    try:
        results.put(asyncio.run(_clients(one, concurrency, per_client, lambda _: None)))
    except BaseException as exc:  # the parent raises it; a silent child would hang the run
        results.put(f"{type(exc).__name__}: {exc}")


async def _clients(one: Any, concurrency: int, per_client: int, done: Any) -> list[Sample]:
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    timeout = httpx.Timeout(connect=10, read=600, write=30, pool=600)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        async def user() -> list[Sample]:
            out = []
            for _ in range(per_client):
                out.append(await one(client))
                done(1)
            return out

        groups = await asyncio.gather(*(user() for _ in range(concurrency)))
    return [s for g in groups for s in g]


# --- in-process ceilings -----------------------------------------------------------------------
def static_generate(model: Any, tokenizer: Any, batch: int, max_tokens: int) -> float:
    """Output tokens/s of ONE ``model.generate()`` call over ``batch`` copies of the chat prompt."""
    import torch

    text = tokenizer.apply_chat_template([{"role": "user", "content": CHAT_WORDS}], tokenize=False,
                                         add_generation_prompt=True)
    enc = tokenizer([text] * batch, return_tensors="pt", add_special_tokens=False)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    new = (out.shape[1] - enc["input_ids"].shape[1]) * batch
    return new / (time.perf_counter() - start)


def raw_encode(model: Any, count: int, batch: int) -> float:
    """Sentences/s of sentence-transformers ``encode`` on ``count`` one-sentence inputs."""
    start = time.perf_counter()
    model.encode([SENTENCE] * count, batch_size=batch, show_progress_bar=False)
    return count / (time.perf_counter() - start)


# --- loopback server processes --------------------------------------------------------------------
class Servers:
    """Processes started by the harness (workers, gateway, peers), each in its own process group."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str], port: int) -> str:
        """A ``model-service`` subcommand (worker, gateway) on ``port``; returns its base URL."""
        self.spawn(name, [sys.executable, "-m", "stack", *args, "--host", "127.0.0.1", "--port", str(port),
                          "--log-level", "warning"], env)
        return f"http://127.0.0.1:{port}"

    def spawn(self, name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        log = (self.log_dir / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, cwd=cwd)

    def wait_ready(self, urls: list[str], timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        for url in urls:
            self.wait_url(None, f"{url}/health", deadline - time.monotonic())

    def wait_url(self, name: str | None, url: str, timeout_s: float) -> None:
        """Poll ``url`` until it answers 200; fail early when ``name`` (or any process) has exited."""
        deadline = time.monotonic() + timeout_s
        watched = [self.procs[name]] if name else list(self.procs.values())
        while True:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if any(p.poll() is not None for p in watched):
                raise RuntimeError(f"{name or 'a server'} exited before {url} was ready; see logs in {self.log_dir}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} was not ready within {timeout_s:.0f} s; see logs in {self.log_dir}")
            time.sleep(0.25)

    def stop(self, name: str | None = None) -> None:
        """Stop one process (by name) or all of them: SIGTERM to its group, SIGKILL after 15 s."""
        names = [name] if name else list(self.procs)
        procs = [self.procs.pop(n) for n in names if n in self.procs]
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


class LoadSampler:
    """Samples the 1-minute load average every ``every_s`` seconds while the run goes on (a thread)."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(self.every_s)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        values = self.samples or [os.getloadavg()[0]]
        return {"every_s": self.every_s, "samples": len(values), "min_1m": round(min(values), 2),
                "median_1m": round(float(np.median(values)), 2), "max_1m": round(max(values), 2),
                "end": [round(v, 2) for v in os.getloadavg()]}
