"""The engines table's set-ups (scripts/bench_engines.py) and the GPU script's commands, without engines."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import bench_engines  # noqa: E402


def test_cpu_setups_pin_vllm_to_float32_and_give_every_stream_a_slot() -> None:
    env = bench_engines.engine_env("vllm", gpus="", slots=32, eager=True)
    assert env["WORKER_ENGINE"] == "vllm" and env["WORKER_DTYPE"] == "float32" and env["WORKER_DEVICE"] == "cpu"
    assert env["WORKER_MAX_CONCURRENCY"] == env["WORKER_MAX_BATCH_SIZE"] == "32"
    assert env["WORKER_VLLM_ENFORCE_EAGER"] == "true"
    auto = bench_engines.engine_env("transformers-auto", gpus="", slots=8, eager=True)
    assert auto["WORKER_DTYPE"] == "auto" and "WORKER_VLLM_ENFORCE_EAGER" not in auto


def test_gpu_setups_name_the_gpus_and_leave_the_dtype_to_auto() -> None:
    env = bench_engines.engine_env("vllm", gpus="0,1", slots=32, eager=False)
    assert env["WORKER_GPU_INDICES"] == "0,1" and env["WORKER_DEVICE"] == "cuda" and "WORKER_DTYPE" not in env
    with pytest.raises(ValueError, match="unknown engine setup"):
        bench_engines.engine_env("ollama", gpus="", slots=1, eager=False)


def test_every_setup_is_a_worker_setting_the_worker_accepts() -> None:
    from model_service.settings import WorkerSettings

    for name in bench_engines.ENGINES:
        env = bench_engines.engine_env(name, gpus="", slots=4, eager=True)
        values = {k.removeprefix("WORKER_").lower(): v for k, v in env.items() if k.startswith("WORKER_")}
        WorkerSettings(_env_file=None, **{k: v for k, v in values.items() if k != "engine"})


def test_the_markdown_table_has_a_row_per_path_and_names_what_was_not_measured() -> None:
    row = {"concurrency": 1, "output_tokens_per_s": 20.0, "ttft_p95_ms": 90.0, "load_avg_1m": 1.5}
    table = bench_engines.engines_markdown({"vllm": {"direct": [row], "gateway": [row]},
                                            "llamacpp": {"error": "RuntimeError: no llama-server"}})
    assert "| vllm | direct | 1: 20.0 | 90.0 | 1.5 |" in table and "| vllm | gateway |" in table
    assert "not measured: RuntimeError: no llama-server" in table


def test_gpu_script_dry_run_prints_the_commands_without_a_gpu() -> None:
    out = subprocess.run(["bash", str(REPO / "scripts/bench_gpu_engines.sh"), "--dry-run"], capture_output=True,
                         text=True, timeout=30, env={**os.environ, "GPUS": "1", "OUT": "/tmp/out"}, check=True)
    install, bench = out.stdout.strip().splitlines()
    assert install.startswith("VLLM_FLAVOUR=cuda bash ") and install.endswith("scripts/vllm-venv.sh")
    assert "--engines transformers-auto,vllm,vllm-bare --engine-gpus 1 --engine-levels 1,8,32" in bench
    assert bench.endswith("--out /tmp/out")


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this host may have a GPU: the script would run")
def test_gpu_script_without_a_gpu_says_so() -> None:
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # no nvidia-smi on this PATH
    out = subprocess.run(["bash", str(REPO / "scripts/bench_gpu_engines.sh")], capture_output=True, text=True,
                         timeout=30, env=env)
    assert out.returncode == 2 and "no CUDA GPU here" in out.stderr


def test_setups_joined_by_plus_form_one_group_and_unknown_ones_fail_first() -> None:
    assert bench_engines.engine_groups("transformers-auto+llamacpp,vllm,,") == [
        ["transformers-auto", "llamacpp"], ["vllm"]]
    with pytest.raises(ValueError, match="unknown engine setup 'ollama'"):
        bench_engines.engine_groups("llamacpp+ollama")


def test_the_table_names_what_auto_resolved_to() -> None:
    row = {"concurrency": 32, "output_tokens_per_s": 200.0, "ttft_p95_ms": 900.0, "load_avg_1m": 2.0}
    table = bench_engines.engines_markdown({"transformers-auto": {
        "resolved": {"engine": "transformers", "device": "cpu", "dtype": "bfloat16"}, "direct": [row]}})
    assert "| transformers-auto (transformers, bfloat16) | direct | 32: 200.0 | 900.0 | 2.0 |" in table
