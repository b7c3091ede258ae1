"""The chart rendered once per test session for each example values set (``helm template``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers.helm import EXAMPLES, documents, helm_template, k8s_tools


@pytest.fixture(scope="session")
def tools() -> Path:
    return k8s_tools()


@pytest.fixture(scope="session")
def rendered(tools: Path) -> dict[str, str]:
    """Example name -> the manifests ``helm template`` prints for it."""
    out = {}
    for name, values in EXAMPLES.items():
        done = helm_template(tools, values)
        assert done.returncode == 0, f"{name}: {done.stderr}"
        out[name] = done.stdout
    return out


@pytest.fixture(scope="session")
def manifests(rendered: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    return {name: documents(text) for name, text in rendered.items()}
