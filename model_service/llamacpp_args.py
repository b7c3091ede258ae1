"""The ``llama-server`` command line for one GGUF model, from the worker's settings.

Options checked against the llama.cpp tree the binary is built from (``tools/server/README.md`` of
the llama-cpp-python 0.3.36 sdist): ``--parallel`` slots with ``--cont-batching`` are why this server
is used rather than llama-cpp-python's own (one request at a time); ``--jinja`` applies the GGUF's
own chat template; ``--metrics`` exposes its Prometheus counters for the worker to read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def llama_server_argv(binary: Path, gguf: Path, *, served_name: str, port: int, context_length: int,
                      parallel: int = 4, threads: int | None = None, host: str = "127.0.0.1",
                      gpu_layers: int | str | None = None, extra_args: Sequence[str] = ()) -> list[str]:
    """``context_length`` is per request. llama-server's ``--ctx-size`` is the whole KV cache, split
    evenly over the ``--parallel`` slots when the cache is not unified, so it gets
    ``context_length * parallel`` and ``--no-kv-unified``: every admitted request holds a full context,
    and no slot runs out of cache mid-stream because others took it (the unified pool would let one
    long request starve the rest). ``threads`` None leaves llama.cpp's own choice (the physical cores);
    ``gpu_layers`` (a count, ``"all"`` or ``"auto"``) only matters in a CUDA build. ``extra_args``
    come last, so an operator's own option wins over ours."""
    if context_length < 1 or parallel < 1:
        raise ValueError("context_length and parallel must be at least 1")
    argv = [
        str(binary),
        "--model", str(gguf),
        "--alias", served_name,
        "--host", host,
        "--port", str(port),
        "--ctx-size", str(context_length * parallel),
        "--parallel", str(parallel),
        "--no-kv-unified",
        "--cont-batching",
        "--jinja",
        "--metrics",
        "--no-webui",
        "--log-colors", "off",
    ]
    if threads is not None:
        argv += ["--threads", str(threads)]
    if gpu_layers is not None:
        argv += ["--n-gpu-layers", str(gpu_layers)]
    return [*argv, *extra_args]
