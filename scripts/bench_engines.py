"""The engines table of ``scripts/bench.py --engines``: one chat model on each engine, direct and via the gateway.

Each setup gets a worker on the starter chat model (its Hugging Face folder; for llama.cpp the
starter's Q4_1 GGUF, or with ``llamacpp-q8_0`` / ``llamacpp-bf16`` that folder converted by the
registry's own ``export_gguf`` in a scratch store) and a gateway in front of it. Setups joined with
``+`` run side by side and are measured together: at each concurrency level every worker direct and
every gateway in turn (interleaved rounds, as the other parts of bench.py), so ratios between them
(the issue's "best engine vs today's default") do not depend on when each ran. Comma-separated groups
run one after another (vLLM alone holds ~5 GB on a CPU). Streamed, temperature 0, with the output
tok/s, TTFT p95, the load average of the level and what the worker resolved ``auto`` to (its
``/health``). ``vllm-bare`` is vLLM's own server alone, started with the same arguments the worker
gives it, so the worker's and gateway's cost on top of vLLM reads off one run. On a CUDA host
``--engine-gpus 0`` puts the engines on that GPU (``scripts/bench_gpu_engines.sh``).
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import bench_load as bl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Engine setups by name: the worker's environment for each. "auto" dtype is what a user gets by default.
ENGINES: dict[str, dict[str, str]] = {
    "transformers-auto": {"WORKER_ENGINE": "transformers", "WORKER_DTYPE": "auto"},
    "transformers-fp32": {"WORKER_ENGINE": "transformers", "WORKER_DTYPE": "float32"},
    "transformers-bf16": {"WORKER_ENGINE": "transformers", "WORKER_DTYPE": "bfloat16"},
    "vllm": {"WORKER_ENGINE": "vllm"},
    "vllm-bare": {},  # not a worker: vLLM's server alone
    "llamacpp": {"WORKER_ENGINE": "llamacpp"},  # the starter's own Q4_1 file
    "llamacpp-q8_0": {"WORKER_ENGINE": "llamacpp"},  # models export-gguf --type q8_0 of the HF folder
    "llamacpp-bf16": {"WORKER_ENGINE": "llamacpp"},
}


def engine_env(name: str, *, gpus: str, slots: int, eager: bool) -> dict[str, str]:
    """The worker environment for one engine setup: ``slots`` admitted requests decoded together, a
    queue that never refuses, and the GPU list (or the CPU, where vLLM gets float32 like the fp32 row:
    bf16 is slower than fp32 on CPUs without AMX; ``auto`` decides on a GPU)."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine setup {name!r}; one of {', '.join(ENGINES)}")
    env = {"WORKER_MAX_CONCURRENCY": str(slots), "WORKER_MAX_BATCH_SIZE": str(slots), "WORKER_MAX_QUEUE": "1024",
           "WORKER_MAX_MODEL_LEN": "1024", "HF_HUB_OFFLINE": "1", **ENGINES[name]}
    if gpus:
        env.update({"WORKER_GPU_INDICES": gpus, "WORKER_DEVICE": "cuda"})
    else:
        env["WORKER_DEVICE"] = "cpu"
        if name.startswith("vllm"):
            env["WORKER_DTYPE"] = "float32"
    if name.startswith("vllm") and eager:
        env["WORKER_VLLM_ENFORCE_EAGER"] = "true"
    return env


def model_path(name: str) -> Path:
    from stack.starters import STARTER_LLM, package_dir, prepare

    if name == "llamacpp":
        return package_dir(STARTER_LLM.package) / str(STARTER_LLM.gguf_file)
    if name.startswith("llamacpp-"):
        return exported_gguf(name.removeprefix("llamacpp-"))
    return prepare(STARTER_LLM)


@functools.cache
def exported_gguf(outtype: str) -> Path:
    """The starter's Hugging Face folder converted to ``outtype`` by the registry's export in a scratch
    local store, fetched and verified (the same path a user's ``models export-gguf`` takes)."""
    from stack.starters import STARTER_LLM, prepare
    from tests.helpers.gguf import export_smollm

    scratch = Path(tempfile.mkdtemp(prefix="bench-gguf-"))
    return export_smollm(prepare(STARTER_LLM), scratch, (outtype,)).files[outtype]


def bare_vllm_argv(env: dict[str, str], port: int, model: str) -> tuple[list[str], dict[str, str]]:
    """vLLM's server with the arguments and environment the worker would give it (same settings)."""
    from model_service.engine_paths import find_vllm_python
    from model_service.engines.vllm import vllm_options
    from model_service.settings import WorkerSettings
    from model_service.vllm_args import vllm_argv, vllm_env

    values = {k.removeprefix("WORKER_").lower(): v for k, v in env.items() if k.startswith("WORKER_")}
    settings = WorkerSettings(_env_file=None, model_name=model, model_path=str(model_path("vllm")), **values)
    gpus = bool(settings.gpu_indices)
    python = find_vllm_python("cuda" if gpus else "cpu")
    if python is None:
        raise RuntimeError("the vLLM venv is not installed (make vllm-venv)")
    options = vllm_options(settings, settings.dtype, settings.max_model_len or 1024)
    argv = vllm_argv(python, Path(settings.model_path or ""), served_name=model, port=port, options=options)
    child_env = vllm_env(options, cache_root=settings.cache_dir / "vllm", cpu_threads=os.cpu_count() or 1,
                         kv_cache_gib=settings.vllm_kv_cache_gib)
    return argv, child_env


def measure_engines(args: Any, servers: bl.Servers, free_port: Callable[[], int],
                    interleaved: Callable[..., dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """``{setup: {"direct": rows, "gateway": rows}}`` (``vllm-bare``: ``{"bare": rows}``).

    ``args.engines`` is a comma-separated list of groups; setups joined by ``+`` form one group, which
    runs side by side and is measured interleaved (every target in turn, order rotated per round), so
    their ratios hold even when the machine's load drifts. Groups run one after another (vLLM alone
    holds ~5 GB and its own threads: give it a group of its own)."""
    levels = [int(x) for x in args.engine_levels.split(",") if x]
    out: dict[str, Any] = {}
    for group in engine_groups(args.engines):
        envs = {name: engine_env(name, gpus=args.engine_gpus, slots=max(levels), eager=args.vllm_eager)
                for name in group}
        try:
            started = {name: _start(name, env, f"{args.chat_model}-{name}", servers, free_port)
                       for name, env in envs.items()}
            runs = {f"{name} {kind}": partial(bl.chat_once, base=url, model=f"{args.chat_model}-{name}",
                                              max_tokens=args.max_tokens, unique=args.unique_prompts)
                    for name, targets in started.items() for kind, url in targets.items()}
            rows = interleaved(f"engines {'+'.join(group)}", runs, levels, lambda _: args.chat_per_client,
                               args.rounds)
            for name, targets in started.items():
                out[name] = {"env": envs[name], "resolved": resolved(targets),
                             **{kind: rows[f"{name} {kind}"] for kind in targets}}
        except Exception as exc:  # one engine missing (no vLLM venv, no llama-server) leaves the other groups
            for name in group:
                out[name] = {"env": envs.get(name), "error": f"{type(exc).__name__}: {exc}"}
            args.peers.note(f"engines {'+'.join(group)} not measured: {exc}")
        finally:
            servers.stop()
    return out


def engine_groups(spec: str) -> list[list[str]]:
    """``"a+b,c"`` -> ``[["a", "b"], ["c"]]``; an unknown setup fails before anything starts."""
    groups = [[n for n in part.split("+") if n] for part in spec.split(",")]
    for name in (n for g in groups for n in g):
        if name not in ENGINES:
            raise ValueError(f"unknown engine setup {name!r}; one of {', '.join(ENGINES)}")
    return [g for g in groups if g]


def resolved(targets: dict[str, str]) -> dict[str, Any] | None:
    """What the worker resolved ``auto`` to (engine, device, dtype), from its ``/health``: the row's
    settings say what was asked, this says what ran."""
    import httpx

    if "direct" not in targets:
        return None
    health = httpx.get(f"{targets['direct']}/health", timeout=10).json()
    return {k: health.get(k) for k in ("engine", "device", "dtype")}


def _start(name: str, env: dict[str, str], model: str, servers: bl.Servers,
           free_port: Callable[[], int]) -> dict[str, str]:
    """Start one setup; the URLs to measure by kind (``direct``, ``gateway`` or ``bare``)."""
    if name == "vllm-bare":
        port = free_port()
        argv, child_env = bare_vllm_argv(env, port, model)
        servers.spawn(name, argv, child_env)
        url = f"http://127.0.0.1:{port}"
        servers.wait_url(name, f"{url}/health", 900)
        return {"bare": url}
    worker = servers.start(name, ["worker", "--model-type", "llm", "--model-name", model, "--model-path",
                                  str(model_path(name))], env, free_port())
    servers.wait_url(name, f"{worker}/health", 900)
    gateway = servers.start(f"{name}-gateway", ["gateway", "--workers", worker], {}, free_port())
    servers.wait_url(f"{name}-gateway", f"{gateway}/health", 60)
    return {"direct": worker, "gateway": gateway}


def engines_markdown(engines: dict[str, Any]) -> str:
    """The engines table: output tok/s per level, TTFT p95 at the highest, the load average."""
    lines = ["", "## Engines", "", "| engine | path | tok/s by streams | TTFT p95 at the most (ms) | load avg |",
             "|---|---|---|---|---|"]
    for name, result in engines.items():
        if "error" in result:
            lines.append(f"| {name} | — | not measured: {result['error']} | | |")
            continue
        for kind in ("direct", "gateway", "bare"):
            rows = result.get(kind)
            if not rows:
                continue
            rates = " / ".join(f"{r['concurrency']}: {r['output_tokens_per_s']}" for r in rows)
            ran = result.get("resolved") or {}
            label = f"{name} ({ran.get('engine')}, {ran.get('dtype')})" if ran.get("dtype") else name
            lines.append(f"| {label} | {kind} | {rates} | {rows[-1]['ttft_p95_ms']} | "
                         f"{' / '.join(str(r['load_avg_1m']) for r in rows)} |")
    return "\n".join(lines) + "\n"
