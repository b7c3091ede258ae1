"""Throughput benchmark: a concurrency sweep for chat and embeddings, beside same-run baselines.

    python scripts/bench.py                       # start workers + gateway on free loopback ports
    python scripts/bench.py --base-url http://127.0.0.1:8080 --chat-model smollm2 --embedding-model minilm
    model-service bench ...                       # the same, through the CLI

Chat (streamed, temperature 0): TTFT p50/p95/p99, inter-token latency, output tokens/s, requests/s,
errors; baselines: static batched ``model.generate()`` at the same batch size (ceiling) and the same
worker run one request at a time (``WORKER_MAX_BATCH_SIZE=1``). Embeddings (one sentence per
request): items/s and latency p50/p95/p99, direct and through the gateway; baseline: raw
sentence-transformers ``encode`` at batch 32; peer: infinity-emb on the same model folder; the ONNX
Runtime exports (fp32, int8) beside them with their quality figures (``bench_onnx``). Gateway
overhead: the fake engine direct vs through the gateway; peer: the LiteLLM proxy in front of the same
worker. Peers run from their own venvs under ``--peers-dir`` (``scripts/bench-peers-setup.sh``) and
are skipped with a note when missing. Embedding and gateway targets are measured interleaved (each
level: every target in turn, ``--rounds`` times), so a change in the machine's load hits them alike.
Writes JSON, a markdown table and a PNG plot. Figures, not pass/fail: never a CI gate.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_load next to this file, however run
import bench_load as bl
import bench_onnx
import bench_peers
from bench_engines import engines_markdown, measure_engines
from bench_report import markdown, plot

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="bench")
    p.add_argument("--base-url", help="measure a running gateway/worker instead of starting servers")
    p.add_argument("--chat-model", default="smollm2")
    p.add_argument("--embedding-model", default="minilm")
    p.add_argument("--concurrency", default="1,4,16,32,64", help="comma-separated levels")
    p.add_argument("--baseline-concurrency", default="1,4,32",
                   help="levels for the one-at-a-time server (its rate is flat, so a few suffice)")
    p.add_argument("--max-tokens", type=int, default=32, help="output tokens per chat request")
    p.add_argument("--chat-per-client", type=int, default=1, help="chat requests per client per level")
    p.add_argument("--embed-per-client", type=int, default=8, help="embedding requests per client per level")
    p.add_argument("--fake-requests", type=int, default=300, help="requests for the gateway-overhead test")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--embedding-batch-size", type=int, default=32,
                   help="max embedding batch, for our worker and infinity-emb alike")
    p.add_argument("--torch-threads", type=int, default=0,
                   help="OMP/MKL threads for every model process (our workers, infinity-emb, the in-process "
                        "ceilings); 0 = the libraries' default (one per core)")
    p.add_argument("--rounds", type=int, default=3,
                   help="interleaved rounds per level for the embedding and gateway parts (samples pooled)")
    p.add_argument("--peers-dir", default=str(REPO / ".bench-peers"),
                   help="folder with the peers' venvs (infinity/, litellm/) made by scripts/bench-peers-setup.sh")
    p.add_argument("--skip", default="",
                   help="comma-separated parts to skip: chat,embeddings,onnx,gateway,ceilings,infinity,litellm")
    p.add_argument("--engines", default="",
                   help="the engines table (scripts/bench_engines.py): comma-separated groups of setups "
                        "(transformers-auto,transformers-fp32,transformers-bf16,vllm,vllm-bare,llamacpp); "
                        "setups joined by + run side by side and are measured interleaved")
    p.add_argument("--engine-levels", default="1,8,32", help="stream counts for the engines table")
    p.add_argument("--unique-prompts", action="store_true",
                   help="engines table: every chat request starts with its own number, so no engine's "
                        "prompt cache can skip the prefill (by default every stream sends the same prompt)")
    p.add_argument("--engine-gpus", default="", help="GPU list for the engines (e.g. 0); empty: the CPU")
    p.add_argument("--vllm-eager", action="store_true",
                   help="vLLM with --enforce-eager (starts in ~40 s on a CPU instead of minutes; decodes slower)")
    p.add_argument("--out", default="bench-results", help="folder for results.json, results.md, bench.png")
    return p.parse_args(argv)


def sweep(label: str, one: Any, levels: list[int], per_client: int) -> list[dict[str, Any]]:
    rows = []
    with tqdm(total=sum(levels) * per_client, desc=label, unit="req") as bar:
        for level in levels:
            rows.append(bl.sweep_level(one, level, per_client, bar))
    return rows


def interleaved(label: str, targets: dict[str, Any], levels: list[int], per_client: Callable[[int], int],
                rounds: int) -> dict[str, list[dict[str, Any]]]:
    """Each level: every target in turn (order rotated per round), ``rounds`` times; a target's samples
    over the rounds are pooled into one row (rate = requests over the sum of the rounds' wall times)."""
    names = list(targets)
    out: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for name in names:  # warm-up, not counted: first connections, lazy imports, first batch, and every
        # slot of an engine's prompt cache (else whichever target runs first at the top level pays it)
        bl.run_level(targets[name], max(levels), 1, tqdm(disable=True))
    total = sum(per_client(c) * c for c in levels) * len(names) * rounds
    with tqdm(total=total, desc=label, unit="req") as bar:
        for level in levels:
            pooled: dict[str, list[bl.Sample]] = {n: [] for n in names}
            walls: dict[str, list[float]] = {n: [] for n in names}
            rates: dict[str, list[float | None]] = {n: [] for n in names}
            for r in range(rounds):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    samples = bl.run_level(targets[name], level, per_client(level), bar)
                    wall = bl.wall_of(samples)
                    pooled[name] += samples
                    walls[name].append(wall)
                    rates[name].append(round(sum(s.error is None for s in samples) / wall, 2) if wall else None)
            load = round(os.getloadavg()[0], 2)
            for name in names:
                out[name].append({"concurrency": level, **bl.summarize(pooled[name], sum(walls[name])),
                                  "requests_per_s_rounds": rates[name], "load_avg_1m": load})
    return out


def ceilings(args: argparse.Namespace, levels: list[int]) -> dict[str, Any]:
    """In-process ceilings, measured while no server is running (they would share the CPU)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stack.starters import STARTER_EMBEDDING, STARTER_LLM, prepare

    out: dict[str, Any] = {"static_generate_tokens_per_s": {}, "raw_encode_items_per_s": {}}
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if "chat" not in args.skip:
        path = prepare(STARTER_LLM)
        tok = AutoTokenizer.from_pretrained(path)
        tok.padding_side = "left"
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        bl.static_generate(model, tok, 1, 4)  # warm-up
        for level in tqdm(levels, desc="static generate()"):
            rate = bl.static_generate(model, tok, level, args.max_tokens)
            out["static_generate_tokens_per_s"][level] = round(rate, 2)
        del model
    if getattr(args, "onnx_folders", None):
        out.update(bench_onnx.ceilings(prepare(STARTER_EMBEDDING), args.onnx_folders, args.torch_threads,
                                       args.embedding_batch_size))
    if "embeddings" not in args.skip:
        st = SentenceTransformer(str(prepare(STARTER_EMBEDDING)), device="cpu")
        bl.raw_encode(st, 32, 32)
        for batch in (1, 32):
            out["raw_encode_items_per_s"][batch] = round(bl.raw_encode(st, 256 if batch > 1 else 64, batch), 2)
    return out


def thread_env(args: argparse.Namespace) -> dict[str, str]:
    n = str(args.torch_threads)
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "WORKER_TORCH_THREADS": n} if args.torch_threads else {}


def start_servers(servers: bl.Servers, args: argparse.Namespace) -> dict[str, str]:
    from stack.starters import STARTER_EMBEDDING, STARTER_LLM, prepare

    common = {"WORKER_MAX_QUEUE": "1024", "WORKER_DEVICE": "cpu", "HF_HUB_OFFLINE": "1", **thread_env(args)}
    urls: dict[str, str] = {}
    if "chat" not in args.skip:
        llm = ["worker", "--model-type", "llm", "--model-name", args.chat_model, "--model-path",
               str(prepare(STARTER_LLM))]
        urls["llm"] = servers.start("llm", llm, {**common, "WORKER_MAX_BATCH_SIZE": str(args.max_batch_size)},
                                    free_port())
        urls["llm_one"] = servers.start("llm-one", [*llm[:4], f"{args.chat_model}-one", *llm[5:]],
                                        {**common, "WORKER_MAX_BATCH_SIZE": "1"}, free_port())
    if "embeddings" not in args.skip:
        urls["embedding"] = servers.start("embedding", ["worker", "--model-type", "embedding", "--model-name",
                                                        args.embedding_model, "--model-path",
                                                        str(prepare(STARTER_EMBEDDING))],
                                          {**common, "WORKER_EMBEDDING_MAX_BATCH_SIZE": str(args.embedding_batch_size)},
                                          free_port())
        if getattr(args, "onnx_folders", None):
            env = {**common, "WORKER_EMBEDDING_MAX_BATCH_SIZE": str(args.embedding_batch_size)}
            urls.update(bench_onnx.start_workers(lambda name, argv, e: servers.start(name, argv, e, free_port()),
                                                 args.onnx_folders, args.embedding_model, env))
    if "gateway" not in args.skip:
        urls["fake"] = servers.start("fake", ["worker", "--engine", "fake", "--model-type", "llm",
                                              "--model-name", "fake-model"], common, free_port())
    workers = ",".join(u for k, u in urls.items() if k != "llm_one")
    urls["gateway"] = servers.start("gateway", ["gateway", "--workers", workers], {}, free_port())
    servers.wait_ready(list(urls.values()))
    _wait_models(urls["gateway"], _served(urls, args))
    return urls


def _served(urls: dict[str, str], args: argparse.Namespace) -> set[str]:
    onnx = tuple((f"onnx_{v}", bench_onnx.model_name(args.embedding_model, v)) for v in bench_onnx.VARIANTS)
    return {m for k, m in (("llm", args.chat_model), ("embedding", args.embedding_model), ("fake", "fake-model"),
                           *onnx) if k in urls}


def _wait_models(gateway: str, models: set[str], timeout_s: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listed = {m["id"] for m in httpx.get(f"{gateway}/v1/models", timeout=5).json().get("data", [])}
        if models <= listed:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the gateway never listed {sorted(models)}")


def measure(args: argparse.Namespace, urls: dict[str, str], levels: list[int]) -> dict[str, Any]:
    res: dict[str, Any] = {}
    gw = urls.get("gateway") or args.base_url
    base_levels = [c for c in (int(x) for x in args.baseline_concurrency.split(",")) if c]
    if "chat" not in args.skip:
        chat = partial(bl.chat_once, model=args.chat_model, max_tokens=args.max_tokens)
        bl_chat = partial(bl.chat_once, model=f"{args.chat_model}-one", max_tokens=args.max_tokens)
        bl.sweep_level(lambda c: chat(c, gw), 1, 1, tqdm(disable=True))  # warm-up
        res["chat_gateway"] = sweep("chat via gateway", lambda c: chat(c, gw), levels, args.chat_per_client)
        if "llm_one" in urls:
            res["chat_one_at_a_time"] = sweep("chat one-at-a-time", lambda c: bl_chat(c, urls["llm_one"]),
                                              base_levels, args.chat_per_client)
    if "embeddings" not in args.skip:
        res.update(measure_embeddings(args, urls, gw, levels))
    if "gateway" not in args.skip and "fake" in urls:
        res.update(measure_gateway(args, urls, gw))
    return res


def measure_embeddings(args: argparse.Namespace, urls: dict[str, str], gw: str,
                       levels: list[int]) -> dict[str, Any]:
    """Our worker direct, through our gateway, and infinity-emb on the same folder, interleaved."""
    from stack.starters import STARTER_EMBEDDING, prepare

    emb = partial(bl.embed_once, model=args.embedding_model)
    targets: dict[str, Any] = {"embeddings_gateway": lambda c: emb(c, gw)}
    if "embedding" in urls:
        targets["embeddings_direct"] = lambda c: emb(c, urls["embedding"])
    targets.update(bench_onnx.targets(bl.embed_once, urls, gw, args.embedding_model))
    peer = None
    if "infinity" in args.skip:
        args.peers.note("infinity skipped (--skip)")
    elif urls:
        peer = args.peers.infinity(prepare(STARTER_EMBEDDING), args.embedding_model, args.embedding_batch_size,
                                   free_port())
    with peer or contextlib.nullcontext(None) as infinity_url:
        if infinity_url:
            targets["embeddings_infinity"] = lambda c: emb(c, infinity_url)
        return interleaved("embeddings", targets, levels, lambda _: args.embed_per_client, args.rounds)


def measure_gateway(args: argparse.Namespace, urls: dict[str, str], gw: str) -> dict[str, Any]:
    """The fake-engine worker direct, through our gateway, and through the LiteLLM proxy, interleaved."""
    fake = partial(bl.fake_chat_once, model="fake-model")
    targets: dict[str, Any] = {"fake_direct": lambda c: fake(c, urls["fake"]), "fake_gateway": lambda c: fake(c, gw)}
    peer = None
    if "litellm" in args.skip:
        args.peers.note("litellm skipped (--skip)")
    else:
        peer = args.peers.litellm("fake-model", urls["fake"], free_port())
    with peer or contextlib.nullcontext(None) as litellm_url:
        if litellm_url:
            targets["fake_litellm"] = lambda c: fake(c, litellm_url)
        return interleaved("gateway overhead", targets, [1, 16], lambda c: max(1, args.fake_requests // c),
                           args.rounds)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    levels = [int(x) for x in args.concurrency.split(",") if x]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                               "machine": _machine()}
    servers = bl.Servers(Path(tempfile.mkdtemp(prefix="bench-logs-")))
    peers = args.peers = bench_peers.Peers(servers, Path(args.peers_dir), env=thread_env(args))
    if args.base_url:
        peers.note("peers are started only beside servers this harness starts: skipped with --base-url")
    results["peers"] = {"dir": _shown(Path(args.peers_dir)), "versions": peers.versions(), "notes": peers.notes}
    try:
        with bl.LoadSampler() as load:
            if not args.base_url and "embeddings" not in args.skip and "onnx" not in args.skip:
                from stack.starters import STARTER_EMBEDDING, prepare

                args.onnx_folders = bench_onnx.export(prepare(STARTER_EMBEDDING))
            if "ceilings" not in args.skip and not args.base_url:
                results["ceilings"] = ceilings(args, levels)
            if not _only_engines(args):
                urls = {} if args.base_url else start_servers(servers, args)
                results.update(measure(args, urls, levels))
                servers.stop()
            if args.engines and not args.base_url:
                results["engines"] = measure_engines(args, servers, free_port, interleaved)
    finally:
        servers.stop()
    results["machine"]["load_avg_during"] = load.summary()
    results["duration_s"] = round(time.time() - started, 1)
    results["args"] = {k: v for k, v in vars(args).items() if k not in ("peers", "onnx_folders")}

    (out / "results.json").write_text(json.dumps(results, indent=2))
    table = markdown(results) + (engines_markdown(results["engines"]) if "engines" in results else "")
    (out / "results.md").write_text(table)
    if not _only_engines(args):
        plot(results, out / "bench.png")
    print(table)
    print(f"results in {out}/ (results.json, results.md, bench.png)")
    return 0


def _only_engines(args: argparse.Namespace) -> bool:
    """With ``--engines`` and every other part skipped, no other server is started."""
    return bool(args.engines) and {"chat", "embeddings", "gateway"} <= set(args.skip.split(","))


def _shown(path: Path) -> str:
    """A path as recorded in the results: relative to the repo when inside it."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _machine() -> dict[str, Any]:
    import platform

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "load_avg_at_start": [round(v, 2) for v in os.getloadavg()]}


if __name__ == "__main__":
    raise SystemExit(main())
