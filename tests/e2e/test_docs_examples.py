"""The shell and Python blocks of README.md and docs/ that are marked ``run`` work as written.

They run against the real local stack (``model-service up`` with the starter models, keys off), with
only the default ports moved to the test stack's; ``run: servers`` blocks start their servers on free
ports and check that they serve together. Blocks that cannot run here carry a ``not-run`` mark with
the reason (tests/helpers/doc_blocks.py); tests/unit/test_docs_consistency.py fails on an unmarked one.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers.doc_blocks import Block, all_blocks
from tests.helpers.polling import eventually_sync
from tests.helpers.ports import free_ports
from tests.helpers.processes import process

pytestmark = pytest.mark.e2e

RUN = [b for b in all_blocks() if b.mark == "run" and not b.note]
SERVERS = [b for b in all_blocks() if b.mark == "run" and b.note == "servers"]
VENV_BIN = str(Path(sys.executable).parent)
# A Python block that uses `client` without making one continues the README's SDK example.
CLIENT_PRELUDE = 'from openai import OpenAI\nclient = OpenAI(base_url="{url}/v1", api_key="not-needed")\n'


def retarget(code: str, gateway_url: str) -> str:
    """The stack's default gateway address, in any of the spellings the docs use, moved to the test's."""
    return re.sub(r"(?:http://)?(?:127\.0\.0\.1|localhost):8080", gateway_url, code)


# Keys are off on the test stacks: any key (or none) is let through.
NO_KEYS = {"MODEL_SERVICE_ADMIN_KEY": "", "MODEL_SERVICE_SERVICE_TOKEN": ""}


def block_env(gateway_url: str) -> dict[str, str]:
    return {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}", "MODEL_SERVICE_GATEWAY_URL": gateway_url,
            **NO_KEYS}


@pytest.mark.parametrize("block", RUN, ids=lambda b: b.where)
def test_doc_block_runs_on_the_local_stack(block: Block, real_stack, speech_wav: Path, tmp_path: Path) -> None:
    code = retarget(block.code, real_stack.gateway_url)
    shutil.copy(speech_wav, tmp_path / "meeting.wav")  # the recording the README's transcription example opens
    if block.lang == "python":
        if "client." in code and "client =" not in code:
            code = CLIENT_PRELUDE.format(url=real_stack.gateway_url) + code
        argv = [sys.executable, "-c", code]
    else:
        argv = ["bash", "-euo", "pipefail", "-c", code]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env=block_env(real_stack.gateway_url))
    assert out.returncode == 0, f"{block.where} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    assert not re.search(r'"error":\s*\{', out.stdout), f"{block.where} got an error answer:\n{out.stdout[-2000:]}"
    assert out.stdout.strip(), f"{block.where} printed nothing"


@pytest.mark.parametrize("block", SERVERS, ids=lambda b: b.where)
def test_doc_servers_block_serves(block: Block, tmp_path: Path) -> None:
    commands = [line.split("#")[0].strip() for line in block.code.splitlines()]
    commands = [c for c in commands if c]
    defaults = sorted({int(p) for c in commands for p in re.findall(r"(?:--port |:)(\d{4,5})\b", c)})
    moved = dict(zip(defaults, free_ports(len(defaults)), strict=True))

    def move(command: str) -> str:
        return re.sub(r"(--port |:)(\d{4,5})\b", lambda m: f"{m.group(1)}{moved[int(m.group(2))]}", command)

    with contextlib.ExitStack() as running:  # each server in its own process group, stopped on exit
        for i, command in enumerate(commands):
            program, *argv = shlex.split(move(command))
            assert program == "model-service", f"{block.where}: a servers block runs model-service commands"
            running.enter_context(process(argv, NO_KEYS, tmp_path / f"server-{i}.log"))
        for port in moved.values():
            eventually_sync(lambda p=port: _healthy(p), f"port {port} healthy", within_s=60.0, every_s=0.2)
        if 8080 in moved:  # a gateway among them: it must route to the workers the block started
            gateway = f"http://127.0.0.1:{moved[8080]}"
            workers = [c for c in commands if " worker " in f" {c} "]
            served = eventually_sync(lambda: _replicas(gateway) >= len(workers) and _replicas(gateway),
                                     "the gateway sees every worker", within_s=30.0, every_s=0.2)
            assert served == len(workers)


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def _replicas(gateway: str) -> int:
    try:
        services = httpx.get(f"{gateway}/services", timeout=2, trust_env=False).json()
    except (httpx.HTTPError, ValueError):
        return 0
    return sum(1 for row in services["data"] if row["healthy"])
