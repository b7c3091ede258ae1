"""Which dtype should ``WORKER_DTYPE=auto`` pick on this CPU? float32 and bfloat16, measured in one run.

For each dtype, in interleaved rounds (so a busy neighbour slows both alike): plain ``model.generate()``
over a static batch, and our own engine (the worker's continuous-batching scheduler, called directly)
with N concurrent greedy streams, each on the chat prompt that ``scripts/bench.py`` uses. Prints a
table with the bf16/fp32 ratios, the CPU's bf16/AMX flags and what ``auto`` resolves to here, and
writes the figures as JSON. A benchmark: it reports, it never fails on a figure.

    python scripts/bench_dtype.py --streams 32 --max-tokens 32 --rounds 2 --out docs/bench-dtype.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_load import CHAT_WORDS, static_generate  # noqa: E402

DTYPES = ("float32", "bfloat16")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, default=32, help="concurrent streams (and the static batch size)")
    p.add_argument("--max-tokens", type=int, default=32, help="output tokens per stream")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds per dtype")
    p.add_argument("--out", default="", help="write the figures as JSON here")
    return p.parse_args(argv)


async def engine_streams(engine: Any, streams: int, max_tokens: int) -> dict[str, float]:
    """Output tok/s and TTFT p95 of ``streams`` greedy sequences submitted at once to our scheduler."""
    from model_service.engines.base import SamplingParams

    prompt = engine.chat_prompt([{"role": "user", "content": CHAT_WORDS}])
    params = SamplingParams(max_tokens=max_tokens, temperature=0)
    start = time.perf_counter()

    async def one() -> tuple[float, int]:
        first, tokens = 0.0, 0
        async for delta in engine.generate(prompt, params):
            if not tokens:
                first = time.perf_counter() - start
            tokens += len(delta.token_ids)
        return first, tokens

    results = await asyncio.gather(*(one() for _ in range(streams)))
    elapsed = time.perf_counter() - start
    ttfts = sorted(r[0] for r in results)
    return {"tok_s": sum(r[1] for r in results) / elapsed,
            "ttft_p95_s": ttfts[min(len(ttfts) - 1, round(0.95 * (len(ttfts) - 1)))]}


def load(path: Path, dtype: str) -> Any:
    from model_service.engines import build_engine
    from model_service.settings import WorkerSettings

    engine = build_engine(WorkerSettings(_env_file=None, model_name="smollm2", model_type="llm",
                                         model_path=str(path), dtype=dtype, max_batch_size=64))
    engine.load()
    return engine


def cpu_flags() -> dict[str, bool]:
    import torch

    return {name: bool(getattr(torch.cpu, f"_is_{name}_supported", lambda: False)())
            for name in ("avx512_bf16", "amx_tile", "avx512")}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from model_service.engines.hardware import dtype_name, resolve_dtype
    from stack.starters import STARTER_LLM, prepare

    path = prepare(STARTER_LLM)
    engines = {dtype: load(path, dtype) for dtype in DTYPES}
    runs: dict[str, dict[str, list[float]]] = {d: {"generate": [], "engine": [], "ttft": []} for d in DTYPES}
    try:
        for dtype in DTYPES:  # warm-up: first calls pay one-time allocations and kernel selection
            static_generate(engines[dtype].model, engines[dtype].tokenizer, 2, 4)
            asyncio.run(engine_streams(engines[dtype], 2, 4))
        for rnd in range(args.rounds):
            for dtype in DTYPES if rnd % 2 == 0 else reversed(DTYPES):
                engine = engines[dtype]
                runs[dtype]["generate"].append(static_generate(engine.model, engine.tokenizer, args.streams,
                                                               args.max_tokens))
                ours = asyncio.run(engine_streams(engine, args.streams, args.max_tokens))
                runs[dtype]["engine"].append(ours["tok_s"])
                runs[dtype]["ttft"].append(ours["ttft_p95_s"])
                print(f"round {rnd + 1} {dtype}: generate {runs[dtype]['generate'][-1]:.1f} tok/s, "
                      f"engine {ours['tok_s']:.1f} tok/s, TTFT p95 {ours['ttft_p95_s']:.2f} s", flush=True)
    finally:
        for engine in engines.values():
            engine.close()
    summary = {d: {k: statistics.median(v) for k, v in runs[d].items()} for d in DTYPES}
    report = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "load_avg": os.getloadavg(), "cpu_flags": cpu_flags(),
        "auto_resolves_to": dtype_name(resolve_dtype("auto", "cpu")), "streams": args.streams,
        "max_tokens": args.max_tokens, "rounds": args.rounds, "runs": runs, "median": summary,
    }
    fp32, bf16 = summary["float32"], summary["bfloat16"]
    print(f"\nCPU flags {report['cpu_flags']}; auto resolves to {report['auto_resolves_to']}; "
          f"load average {report['load_avg'][0]:.1f}")
    print(f"| dtype | generate() batch {args.streams} tok/s | our engine, {args.streams} streams tok/s | TTFT p95 s |")
    print("|---|---:|---:|---:|")
    for dtype in DTYPES:
        s = summary[dtype]
        print(f"| {dtype} | {s['generate']:.1f} | {s['engine']:.1f} | {s['ttft']:.2f} |")
    print(f"| bf16 / fp32 | {bf16['generate'] / fp32['generate']:.2f}x | {bf16['engine'] / fp32['engine']:.2f}x "
          f"| {bf16['ttft'] / fp32['ttft']:.2f}x |")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
