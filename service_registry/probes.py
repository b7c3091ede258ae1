"""One probe of one service, turned into an :class:`Observation`. Probes never raise.

Workers: ``GET /health`` (200 with a ``WorkerHealth`` = ok; 503 = not ready, with the reason from
the body, either a ``WorkerHealth`` or OpenAI's error shape) and ``GET /gpu-stats``, both at once.
``/health`` is open on every worker; ``/gpu-stats`` carries ``worker_headers`` (the service token when
auth is on). Externals: ``GET {api_base}/models`` with ``Authorization: Bearer <key>`` when a key is
configured, and never anything else: the platform's own token must not leave the platform.
The whole probe is bounded by the probe timeout, whatever the per-request timeouts let through.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import httpx

from common.probes import describe, ms_since, parse_body
from common.records import GPUStats, ServiceRecord, WorkerHealth
from service_registry.health import Observation
from service_registry.settings import StaticUpstream


async def probe(client: httpx.AsyncClient, record: ServiceRecord, static: StaticUpstream | None,
                timeout_s: float, *, worker_headers: Mapping[str, str] | None = None) -> Observation:
    """Probe ``record`` within ``timeout_s``; any error becomes a failed observation.

    ``worker_headers`` go to workers only (the service token); an external gets its own key alone.
    """
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            if record.kind == "external":
                return await _probe_external(client, record, static, timeout_s, started)
            return await _probe_worker(client, record, timeout_s, started, worker_headers or {})
    except TimeoutError:
        reason = f"probe timed out after {timeout_s:g}s"
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:  # InvalidURL is no HTTPError
        reason = f"unreachable: {describe(exc)}"
    return Observation(url=record.url, outcome="failed", at=time.time(), latency_ms=ms_since(started),
                       reason=reason)


async def _probe_worker(client: httpx.AsyncClient, record: ServiceRecord, timeout_s: float,
                        started: float, headers: Mapping[str, str]) -> Observation:
    health_call = client.get(f"{record.url}/health", timeout=timeout_s)
    # return_exceptions: a refused /health must not leave the /gpu-stats call running on its own.
    health_resp, gpu = await asyncio.gather(health_call, _gpu_stats(client, record.url, timeout_s, headers),
                                            return_exceptions=True)
    if isinstance(health_resp, BaseException):
        raise health_resp
    if isinstance(gpu, BaseException):
        raise gpu
    gpu_stats, gpu_error = gpu
    base: dict[str, Any] = {"url": record.url, "at": time.time(), "latency_ms": ms_since(started),
                            "gpu": gpu_stats, "gpu_error": gpu_error}
    health = parse_body(WorkerHealth, health_resp)
    if health is not None:
        base.update(engine=health.engine, max_model_len=health.max_model_len)
    status = health_resp.status_code
    if status == 200 and health is not None and health.status == "ok":
        return Observation(outcome="ok", **base)
    if status == 200:
        state = health.status if health else "an answer that is not a worker health record"
        return Observation(outcome="failed", reason=f"/health answered 200 with {state}", **base)
    if status == 503:
        loading, reason = _not_ready(health, health_resp)
        return Observation(outcome="not_ready", loading=loading, reason=reason, **base)
    return Observation(outcome="failed", reason=f"/health answered HTTP {status}", **base)


def _not_ready(health: WorkerHealth | None, resp: httpx.Response) -> tuple[bool, str]:
    """Loading or failed, and why, from a 503 body in either shape a worker may send."""
    if health is not None:
        detail = f": {health.detail}" if health.detail else ""
        return health.status == "loading", f"{health.status}{detail}"
    try:
        error = resp.json()["error"]
        message, code = str(error.get("message") or "not ready"), error.get("code")
    except (ValueError, KeyError, TypeError, AttributeError):
        return True, "not ready (HTTP 503)"
    loading = code != "model_load_failed"
    return loading, f"{'loading' if loading else 'error'}: {message}"


async def _gpu_stats(client: httpx.AsyncClient, url: str, timeout_s: float,
                     headers: Mapping[str, str]) -> tuple[GPUStats | None, str | None]:
    """A worker's GPU facts, or why they could not be read; never fails the health probe."""
    try:
        resp = await client.get(f"{url}/gpu-stats", headers=dict(headers), timeout=timeout_s)
    except (httpx.HTTPError, OSError) as exc:
        return None, f"gpu-stats unreachable: {describe(exc)}"
    if resp.status_code in (401, 403):
        return None, (f"gpu-stats refused the registry's service token (HTTP {resp.status_code}): "
                      "give the registry and the worker the same MODEL_SERVICE_SERVICE_TOKEN")
    stats = parse_body(GPUStats, resp) if resp.status_code == 200 else None
    if stats is None:
        return None, f"gpu-stats answered HTTP {resp.status_code} without GPU stats"
    return stats, None


async def _probe_external(client: httpx.AsyncClient, record: ServiceRecord, static: StaticUpstream | None,
                          timeout_s: float, started: float) -> Observation:
    headers = {}
    if static is not None and static.api_key is not None:
        headers["Authorization"] = f"Bearer {static.api_key.get_secret_value()}"
    resp = await client.get(f"{record.api_base}/models", headers=headers, timeout=timeout_s)
    base: dict[str, Any] = {"url": record.url, "at": time.time(), "latency_ms": ms_since(started)}
    if resp.status_code == 200:
        return Observation(outcome="ok", **base)
    if resp.status_code in (401, 403):
        what = "was refused" if record.has_api_key else "is required but none is configured"
        return Observation(outcome="failed", reason=f"authentication failed: the API key {what} "
                                                    f"(HTTP {resp.status_code})", **base)
    return Observation(outcome="failed", reason=f"/models answered HTTP {resp.status_code}", **base)
