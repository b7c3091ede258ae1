"""The README's examples work exactly as written (only the port is moved to the test stack's)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"


def example(kind: str) -> str:
    match = re.search(rf"<!-- example: {kind} -->\s*```\w+\n(.*?)```", README.read_text(), re.S)
    assert match, f"README has no '{kind}' example"
    return match.group(1)


def retarget(code: str, gateway_url: str) -> str:
    assert "http://127.0.0.1:8080" in code
    return code.replace("http://127.0.0.1:8080", gateway_url)


def test_readme_curl_example(real_stack):
    script = retarget(example("curl"), real_stack.gateway_url)
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=180, check=True)
    body = json.loads(out.stdout)
    assert "Paris" in body["choices"][0]["message"]["content"]


def test_readme_python_example(real_stack):
    code = retarget(example("python"), real_stack.gateway_url)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in lines[0]
    assert "sentence-transformers/all-MiniLM-L6-v2" in lines[0]
    assert "Paris" in lines[1]
    assert lines[-1] == "384"
