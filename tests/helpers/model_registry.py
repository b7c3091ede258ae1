"""The model registry in tests: settings per storage backend, an in-process client, jobs, the store's env."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx

from tests.helpers.polling import eventually
from tests.helpers.s3 import S3Server

BACKENDS = ["local", "s3"]


def registry_settings(backend: str, tmp_path: Path, s3: S3Server | None = None, **overrides: object):
    """Settings for one test: a fresh folder, or a fresh bucket on the shared SeaweedFS."""
    from model_registry.settings import ModelRegistrySettings

    values: dict[str, object] = {"storage_backend": backend, "local_root": tmp_path / "store",
                                 "tmp_dir": None, "_env_file": None}
    if backend == "s3":
        assert s3 is not None
        values.update(s3_endpoint=s3.endpoint, s3_access_key=s3.access_key, s3_secret_key=s3.secret_key,
                      s3_bucket=f"t{uuid.uuid4().hex[:24]}", s3_part_size=5 * 1024 * 1024)
    values.update(overrides)
    return ModelRegistrySettings(**values)  # type: ignore[arg-type]


@asynccontextmanager
async def registry_client(settings) -> AsyncIterator[tuple[object, httpx.AsyncClient]]:
    """The registry app with its lifespan running, behind an in-process httpx client."""
    from model_registry.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry", timeout=30) as client:
            yield app, client


async def wait_job(client: httpx.AsyncClient, job_id: str, limit_s: float = 60.0) -> dict:
    """``GET /jobs/{id}`` once the job is done or failed (bounded; the caller asserts which)."""

    async def finished() -> dict | None:
        job = (await client.get(f"/jobs/{job_id}")).json()
        return job if job["state"] in ("done", "failed") else None

    return await eventually(finished, f"job {job_id} to finish", within_s=limit_s, every_s=0.05)


async def finished_job(client: httpx.AsyncClient, url: str, body: dict) -> dict:
    """POST a job-starting request (202 asserted), then the job once it is done or failed."""
    resp = await client.post(url, json=body)
    assert resp.status_code == 202, resp.text
    return await wait_job(client, resp.json()["id"])


async def check_export_route(client: httpx.AsyncClient, model_id: str, action: str, body: dict, bad_body: dict,
                             revision: str) -> None:
    """``POST /models/{id}/<action>`` (an export job): ``body`` is a 202 job that ends done on ``revision``,
    ``bad_body`` a 400/422 naming its parameter, and an unknown model a 404."""
    job = await finished_job(client, f"/models/{model_id}/{action}", body)
    assert job["state"] == "done" and job["kind"] == action.removeprefix("export-") + "-export", job
    assert job["resolved_revision"] == revision
    resp = await client.post(f"/models/{model_id}/{action}", json=bad_body)
    assert resp.status_code in (400, 422) and resp.json()["error"]["param"]
    resp = await client.post(f"/models/org/missing/{action}", json={})
    assert resp.status_code == 404


def run_models_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``model-service models ARGV`` in-process, on the store the ``MODEL_REGISTRY_*`` environment names:
    exit status, stdout and stderr (``capsys``: pytest's capture fixture)."""
    import argparse

    from model_registry.cli import add_models_commands

    parser = argparse.ArgumentParser(prog="model-service")
    models = parser.add_subparsers(dest="command", required=True).add_parser("models")
    add_models_commands(models.add_subparsers(dest="models_command", required=True))
    args = parser.parse_args(["models", *argv])
    code = args.func(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@contextmanager
def flipped_byte(store, key: str) -> Iterator[None]:
    """One bit of the stored object ``key`` flipped (in its middle) for the block, then put back."""
    original = store.get_bytes(key)
    middle = len(original) // 2
    store.put_bytes(key, original[:middle] + bytes([original[middle] ^ 0x01]) + original[middle + 1:])
    try:
        yield
    finally:
        store.put_bytes(key, original)


def use_store(monkeypatch, settings, workdir: Path) -> None:
    """Point this process's ``MODEL_REGISTRY_*`` environment at ``settings``' store, from ``workdir``
    (no stray ``.env``), for the CLI commands that read their settings from there."""
    monkeypatch.chdir(workdir)
    for key, value in registry_env(settings).items():
        monkeypatch.setenv(key, value)


def small_copy(src: Path, dst: Path) -> Path:
    """A model folder without its weights (plus a 1 MiB stand-in), for tests about mechanics."""
    for path in src.rglob("*"):
        if path.is_file() and path.name != "model.safetensors":
            (dst / path.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (dst / path.relative_to(src)).write_bytes(path.read_bytes())
    (dst / "model.safetensors").write_bytes(os.urandom(1024 * 1024))
    return dst


def registry_env(settings) -> dict[str, str]:
    """The environment that makes another process (registry, worker, CLI) open the same store."""
    env = {"MODEL_REGISTRY_STORAGE_BACKEND": settings.storage_backend,
           "MODEL_REGISTRY_LOCAL_ROOT": str(settings.local_root)}
    if settings.storage_backend == "s3":
        env.update(MODEL_REGISTRY_S3_ENDPOINT=settings.s3_endpoint, MODEL_REGISTRY_S3_ACCESS_KEY=settings.s3_access_key,
                   MODEL_REGISTRY_S3_SECRET_KEY=settings.s3_secret_key.get_secret_value(),
                   MODEL_REGISTRY_S3_BUCKET=settings.s3_bucket)
    return env
