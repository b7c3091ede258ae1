"""Resolve ``device``/``dtype`` settings of ``auto`` to what this host runs well.

bfloat16 halves memory but is only fast where the hardware does it natively: CUDA GPUs that say so,
and CPUs with AVX-512 BF16 or AMX. Elsewhere (e.g. an AVX2-only CPU) float32 is the fast choice.
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


def cpu_has_native_bf16() -> bool:
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_dtype(setting: str, device: str) -> torch.dtype:
    if setting != "auto":
        try:
            return _DTYPES[setting.lower()]
        except KeyError:
            raise ValueError(f"unknown dtype {setting!r}; use one of {sorted(_DTYPES)} or 'auto'") from None
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
