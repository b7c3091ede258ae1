"""Comparison peers for ``scripts/bench.py``, each run from its own virtualenv under ``--peers-dir``
(made by ``scripts/bench-peers-setup.sh``; they are not project dependencies):

- ``infinity``: infinity-emb serving the same MiniLM folder as our embedding worker (torch engine, CPU,
  the same max batch size), OpenAI routes under ``/v1``.
- ``litellm``: the LiteLLM proxy in front of the same fake-engine worker as our gateway, the worker
  configured as an OpenAI-compatible upstream (``openai/<model>``, ``api_base`` = the worker's ``/v1``).

A peer whose venv is missing, or that does not come up, is skipped with a printed note: the run goes
on without it. Each peer is started on a free loopback port only for its own part and stopped after it.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bench_load as bl

PEERS = {  # name: (distribution, console script in the venv)
    "infinity": ("infinity-emb", "infinity_emb"),
    "litellm": ("litellm", "litellm"),
}
SETUP = "scripts/bench-peers-setup.sh"
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1",
               "INFINITY_ANONYMOUS_USAGE_STATS": "0", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
               "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR"}


def version(peers_dir: Path, name: str) -> str | None:
    python = peers_dir / name / "bin" / "python"
    if not python.exists():
        return None
    code = f"import importlib.metadata as m; print(m.version({PEERS[name][0]!r}))"
    try:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60, check=True)
    except (subprocess.SubprocessError, OSError):
        return None
    return out.stdout.strip() or None


@dataclass
class Peers:
    """Starts peers beside the harness's servers; ``notes`` keeps what was skipped and why."""

    servers: bl.Servers
    peers_dir: Path
    env: dict[str, str] = field(default_factory=dict)  # for every peer, e.g. the harness's thread counts
    notes: list[str] = field(default_factory=list)

    def note(self, message: str) -> None:
        self.notes.append(message)
        print(f"[peers] {message}", flush=True)

    def versions(self) -> dict[str, str | None]:
        return {name: version(self.peers_dir, name) for name in PEERS}

    def executable(self, name: str) -> Path | None:
        """The peer's console script, or None (with a note) when its venv is not there."""
        exe = self.peers_dir / name / "bin" / PEERS[name][1]
        if exe.exists():
            return exe
        self.note(f"skipping {name}: no venv with {PEERS[name][1]} in {self.peers_dir / name} "
                  f"(create it with: {SETUP} {self.peers_dir})")
        return None

    @contextlib.contextmanager
    def running(self, name: str, argv: list[str], url: str, ready_path: str, env: dict[str, str] | None = None,
                timeout_s: float = 300.0) -> Iterator[str | None]:
        """Start a peer, wait for ``ready_path``, yield its base URL (None if it never came up), stop it.

        Its working directory is the log folder: a peer reading ``.env`` from there never sees the repo's.
        """
        self.servers.spawn(name, argv, {**OFFLINE_ENV, **self.env, **(env or {})}, cwd=self.servers.log_dir)
        try:
            self.servers.wait_url(name, f"{url}{ready_path}", timeout_s)
        except RuntimeError as exc:
            self.note(f"skipping {name}: {exc}")
            self.servers.stop(name)
            yield None
            return
        try:
            yield url
        finally:
            self.servers.stop(name)

    def infinity(self, model_path: Path, model_name: str, batch_size: int,
                 port: int) -> contextlib.AbstractContextManager[str | None]:
        """infinity-emb v2 on the MiniLM folder: torch engine on the CPU, OpenAI routes under /v1."""
        exe = self.executable("infinity")
        if exe is None:
            return contextlib.nullcontext(None)
        argv = [str(exe), "v2", "--model-id", str(model_path), "--served-model-name", model_name,
                "--engine", "torch", "--device", "cpu", "--batch-size", str(batch_size),
                "--url-prefix", "/v1", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        return self.running("infinity", argv, f"http://127.0.0.1:{port}", "/health")  # not under the prefix

    def litellm(self, model: str, upstream: str, port: int) -> contextlib.AbstractContextManager[str | None]:
        """The LiteLLM proxy (one process, no database, no master key) in front of ``upstream``."""
        exe = self.executable("litellm")
        if exe is None:
            return contextlib.nullcontext(None)
        config = self.servers.log_dir / "litellm-config.json"  # JSON is YAML: no yaml writer needed here
        config.write_text(json.dumps(litellm_config(model, upstream), indent=2))
        argv = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                "--num_workers", "1"]
        # No master key, like our gateway with auth off (its default); LiteLLM refuses that unless told.
        env = {"LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true"}
        return self.running("litellm", argv, f"http://127.0.0.1:{port}", "/health/liveliness", env)


def litellm_config(model: str, upstream: str) -> dict[str, Any]:
    return {
        "model_list": [{"model_name": model, "litellm_params": {
            "model": f"openai/{model}", "api_base": f"{upstream}/v1", "api_key": "none"}}],
        "litellm_settings": {"telemetry": False, "drop_params": True},
    }
