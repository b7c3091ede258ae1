"""The deployment files as tests read them: compose files rendered by ``docker-compose config``, and the
Grafana dashboard's PromQL expressions."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = shutil.which("docker-compose") or str(ROOT / ".venv/bin/docker-compose")


def compose_config(files: list[str], *extra: str, profiles: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    argv = [COMPOSE, "--project-directory", str(ROOT), "--env-file", str(ROOT / ".env.example")]
    for f in files:
        argv += ["-f", str(ROOT / f)]
    for p in profiles:
        argv += ["--profile", p]
    return subprocess.run([*argv, "config", *extra], capture_output=True, text=True, timeout=60)


def rendered(files: list[str], *profiles: str) -> dict:
    result = compose_config(files, "--format", "json", profiles=profiles)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def expressions(node: Any) -> Iterator[str]:
    """Every ``expr`` (panel targets) and variable query in a dashboard, however deeply nested."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            else:
                yield from expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from expressions(item)
