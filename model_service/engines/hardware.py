"""Resolve ``device``/``dtype`` settings of ``auto`` to what this host runs well.

On a GPU, bfloat16 (or float16 where bf16 is missing) halves memory and is what the tensor cores are
for. On a CPU the choice is about speed, and "has bf16 instructions" is not the same as "bf16 is
faster": a CPU with AVX-512 BF16 but no AMX runs SmolLM2 slower in bf16 than in fp32 (plain
``generate()``, batch 32: 89 vs 109 tok/s; our worker at 32 streams: 70 vs 104 tok/s; see
docs/BENCHMARKS.md, "Dtype on CPU"), because only the dot products use the bf16 units while every
conversion, norm and softmax around them costs extra. AMX tiles do whole bf16 matrix multiplies, which
is where bf16 wins. So ``auto`` on a CPU is bf16 only with AMX, and float32 everywhere else;
``WORKER_DTYPE`` overrides it.
"""

from __future__ import annotations

import torch

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


def resolve_device(setting: str) -> str:
    if setting != "auto":
        return setting
    return "cuda" if torch.cuda.is_available() else "cpu"


def _cpu_supports(check: str) -> bool:
    return bool(getattr(torch.cpu, check, lambda: False)())


def cpu_bf16_is_faster() -> bool:
    """Where bf16 beats fp32 on a CPU: AMX tiles (measured; AVX-512 BF16 alone is slower than fp32)."""
    return _cpu_supports("_is_amx_tile_supported")


def resolve_dtype(setting: str, device: str) -> torch.dtype:
    if setting != "auto":
        try:
            return _DTYPES[setting.lower()]
        except KeyError:
            raise ValueError(f"unknown dtype {setting!r}; use one of {sorted(_DTYPES)} or 'auto'") from None
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_bf16_is_faster() else torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
