"""Resolve ``device``/``dtype`` settings of ``auto`` to what this host runs well.

On a GPU, bfloat16 (or float16 where bf16 is missing) halves memory and is what the tensor cores are
for. On a CPU the choice is about speed, and "has bf16 instructions" does not say "bf16 is faster":
- no bf16 instructions (e.g. AVX2 only): bf16 is emulated and slow, so float32;
- AMX: whole bf16 matrix multiplies in tiles, so bfloat16;
- AVX-512 BF16 without AMX: it depends on the chip. One such machine ran SmolLM2 slower in bf16
  (``generate()`` batch 32: 89 vs 109 tok/s), another (an AMD EPYC) faster (164 vs 106 tok/s, and 1.9x
  in our engine at 32 streams; docs/BENCHMARKS.md, "Dtype on CPU"). So there ``auto`` measures: a short
  probe times the same matrix multiply in both dtypes, interleaved, and picks bf16 only when it is
  clearly faster (``BF16_MARGIN``). The probe runs once per process, takes well under a second, and
  its figures are logged. ``WORKER_DTYPE`` set to a dtype skips all of this.
"""

from __future__ import annotations

import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import torch

log = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}
# bf16 must beat fp32 by this much on the probe: a near tie keeps float32, which is exact and needs
# no conversions, and a small margin keeps a noisy neighbour from flipping the choice.
BF16_MARGIN = 1.25
# The probe's matrix multiply: a hidden size and a row count between a decode batch and a prefill chunk.
_PROBE_ROWS, _PROBE_WIDTH, _PROBE_ROUNDS, _PROBE_REPS = 64, 1024, 5, 4


def resolve_device(setting: str) -> str:
    if setting != "auto":
        return setting
    return "cuda" if torch.cuda.is_available() else "cpu"


def _cpu_supports(check: str) -> bool:
    return bool(getattr(torch.cpu, check, lambda: False)())


def probe_bf16_speedup() -> float:
    """How many times faster a ``[64, 1024] x [1024, 1024]`` linear runs in bf16 than in fp32 here:
    best of a few interleaved rounds each, so a busy neighbour slows both alike.

    The matmuls run on a thread of their own that ends with the probe. OpenMP keeps a thread team per
    thread that starts parallel work; a team left on the caller (the worker's main thread) made the
    engine thread's generation 17-20 % slower for the rest of the process (SmolLM2 bf16, batch 32, 2
    cores: 411 -> 335 tok/s; through the worker at 32 streams, ``auto`` ran 0.84x an explicit
    ``bfloat16`` that resolves to the same dtype)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bf16-probe") as pool:
        return pool.submit(_probe).result()  # the pool's exit joins its thread; an error re-raises here


def _probe() -> float:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(_PROBE_ROWS, _PROBE_WIDTH, generator=gen)
    w = torch.randn(_PROBE_WIDTH, _PROBE_WIDTH, generator=gen)
    pairs = {dtype: (x.to(dtype), w.to(dtype)) for dtype in (torch.float32, torch.bfloat16)}
    best = dict.fromkeys(pairs, float("inf"))
    with torch.inference_mode():
        for a, b in pairs.values():  # warm-up: kernel selection and first-touch allocations
            torch.nn.functional.linear(a, b)
        for _ in range(_PROBE_ROUNDS):
            for dtype, (a, b) in pairs.items():
                start = time.perf_counter()
                for _ in range(_PROBE_REPS):
                    torch.nn.functional.linear(a, b)
                best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best[torch.float32] / best[torch.bfloat16]


@functools.cache
def cpu_auto_dtype() -> torch.dtype:
    """float32 or bfloat16 for ``auto`` on this CPU (once per process; see the module docstring)."""
    if _cpu_supports("_is_amx_tile_supported"):
        return torch.bfloat16
    if not _cpu_supports("_is_avx512_bf16_supported"):
        return torch.float32
    speedup = probe_bf16_speedup()
    choice = torch.bfloat16 if speedup >= BF16_MARGIN else torch.float32
    log.info("dtype auto on this CPU (AVX-512 BF16, no AMX): bf16 matmul %.2fx fp32 -> %s (bf16 needs %.2fx)",
             speedup, dtype_name(choice), BF16_MARGIN)
    return choice


def resolve_dtype(setting: str, device: str) -> torch.dtype:
    if setting != "auto":
        try:
            return _DTYPES[setting.lower()]
        except KeyError:
            raise ValueError(f"unknown dtype {setting!r}; use one of {sorted(_DTYPES)} or 'auto'") from None
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return cpu_auto_dtype()


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def apply_torch_threads(count: int | None) -> None:
    """Give torch ``count`` intra-op threads, from the thread that runs the model: OpenMP keeps the
    thread count per calling thread, so setting it on the main thread would not reach an engine's
    batcher thread. None leaves torch's default (one per physical core)."""
    if count:
        torch.set_num_threads(count)
