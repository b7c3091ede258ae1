"""GPU and host statistics through NVML (``nvidia-ml-py``) and psutil.

NVML is optional at run time: a host without a driver answers ``available: false`` with the reason,
never an exception. Calls are blocking C calls, so async callers run ``collect_gpu_stats`` in a thread.
"""

from __future__ import annotations

import os

import psutil

from common.records import GPUInfo, GPUStats, HostInfo


def _host() -> HostInfo:
    vm = psutil.virtual_memory()
    return HostInfo(
        cpu_count=os.cpu_count() or 1,
        cpu_percent=psutil.cpu_percent(interval=None),
        memory_used_mb=round((vm.total - vm.available) / 2**20, 1),
        memory_total_mb=round(vm.total / 2**20, 1),
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _one_gpu(pynvml, index: int) -> GPUInfo:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    info = GPUInfo(index=index, name=_text(pynvml.nvmlDeviceGetName(handle)))
    try:
        info.uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
        util = pynvml.nvmlDeviceGetUtilizationRates(handle)
        mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
        info.utilization_percent = float(util.gpu)
        info.memory_used_mb = round(mem.used / 2**20, 1)
        info.memory_total_mb = round(mem.total / 2**20, 1)
        info.temperature_c = float(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU))
        info.power_w = round(pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0, 1)
    except pynvml.NVMLError as exc:  # one bad reading marks that GPU, not the whole answer
        info.error = str(exc)
    return info


def collect_gpu_stats(indices: list[int] | None = None) -> GPUStats:
    """Read every visible GPU (or only ``indices``) plus host CPU/RAM facts."""
    host = _host()
    try:
        import pynvml
    except ImportError:
        return GPUStats(available=False, reason="NVML bindings (nvidia-ml-py) are not installed", host=host)
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return GPUStats(available=False, reason=f"no GPU: NVML unavailable ({exc})", host=host)
    try:
        count = pynvml.nvmlDeviceGetCount()
        wanted = [i for i in range(count) if indices is None or i in indices]
        gpus = [_one_gpu(pynvml, i) for i in wanted]
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        if not gpus:
            return GPUStats(available=False, reason="no GPU visible to this process", driver_version=driver,
                            host=host)
        return GPUStats(available=True, driver_version=driver, gpus=gpus, host=host)
    except Exception as exc:
        return GPUStats(available=False, reason=f"NVML error: {exc}", host=host)
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def gpu_count() -> int | None:
    """How many GPUs NVML sees (0 with a driver and no GPU), or None without a driver or the library:
    a quick count for choices made at start-up, without reading every GPU as ``collect_gpu_stats`` does."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no library: unknown
        return None
