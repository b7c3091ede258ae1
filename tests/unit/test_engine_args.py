"""Engine server command lines (llama-server, vLLM) and the cached build paths the scripts share."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from model_service import engine_paths
from model_service.llamacpp_args import llama_server_argv
from model_service.vllm_args import VllmOptions, vllm_argv, vllm_env

REPO = Path(__file__).resolve().parents[2]


def _option(argv: list[str], name: str) -> str:
    """The value after ``name`` (each option appears once)."""
    assert argv.count(name) == 1, argv
    return argv[argv.index(name) + 1]


def test_llama_server_argv_has_the_model_the_name_and_the_loopback_port():
    argv = llama_server_argv(Path("/bin/llama-server"), Path("/m/model.gguf"), served_name="smol",
                             port=4321, context_length=2048, parallel=4, threads=2)
    assert argv[0] == "/bin/llama-server"
    assert _option(argv, "--model") == "/m/model.gguf"
    assert _option(argv, "--alias") == "smol"
    assert _option(argv, "--host") == "127.0.0.1"
    assert _option(argv, "--port") == "4321"
    assert _option(argv, "--threads") == "2"
    assert _option(argv, "--parallel") == "4"
    for flag in ("--cont-batching", "--jinja", "--metrics", "--no-webui"):
        assert flag in argv


def test_llama_server_ctx_size_is_per_request_length_times_slots_in_split_cache():
    # --ctx-size is shared by all slots: each of the 4 slots gets a full 2048-token context only
    # when the whole cache is 4 x 2048 and not unified (a unified pool lets one request take it all).
    argv = llama_server_argv(Path("b"), Path("m.gguf"), served_name="x", port=1, context_length=2048, parallel=4)
    assert _option(argv, "--ctx-size") == str(4 * 2048)
    assert "--no-kv-unified" in argv


def test_llama_server_optional_arguments_only_when_asked_and_extra_args_last():
    plain = llama_server_argv(Path("b"), Path("m.gguf"), served_name="x", port=1, context_length=512)
    assert "--threads" not in plain and "--n-gpu-layers" not in plain
    gpu = llama_server_argv(Path("b"), Path("m.gguf"), served_name="x", port=1, context_length=512,
                            gpu_layers="all", extra_args=["--flash-attn", "on"])
    assert _option(gpu, "--n-gpu-layers") == "all"
    assert gpu[-2:] == ["--flash-attn", "on"]


@pytest.mark.parametrize(("context_length", "parallel"), [(0, 4), (512, 0)])
def test_llama_server_argv_refuses_empty_slots(context_length, parallel):
    with pytest.raises(ValueError):
        llama_server_argv(Path("b"), Path("m.gguf"), served_name="x", port=1, context_length=context_length,
                          parallel=parallel)


def test_vllm_argv_cpu_runs_the_module_entry_point_without_gpu_options():
    argv = vllm_argv(Path("/venv/bin/python"), Path("/cache/smol"), served_name="smol", port=5000,
                     options=VllmOptions(dtype="float32", max_model_len=2048, enforce_eager=True))
    assert argv[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert _option(argv, "--model") == "/cache/smol"
    assert _option(argv, "--served-model-name") == "smol"
    assert _option(argv, "--host") == "127.0.0.1"
    assert _option(argv, "--port") == "5000"
    assert _option(argv, "--dtype") == "float32"
    assert _option(argv, "--max-model-len") == "2048"
    assert "--enable-prefix-caching" in argv and "--enforce-eager" in argv
    assert "--tensor-parallel-size" not in argv and "--gpu-memory-utilization" not in argv
    assert "--enable-auto-tool-choice" not in argv


def test_vllm_argv_gpu_list_sets_tensor_parallel_and_parsers_are_passed():
    options = VllmOptions(gpus=(2, 3), gpu_memory_utilization=0.85, prefix_caching=False, max_num_seqs=64,
                          tool_call_parser="hermes", reasoning_parser="deepseek_r1",
                          structured_outputs_backend="xgrammar", extra_args=("--seed", "7"))
    argv = vllm_argv(Path("py"), Path("m"), served_name="m", port=1, options=options)
    assert _option(argv, "--tensor-parallel-size") == "2"
    assert _option(argv, "--gpu-memory-utilization") == "0.85"
    assert "--no-enable-prefix-caching" in argv and "--enable-prefix-caching" not in argv
    assert _option(argv, "--max-num-seqs") == "64"
    assert "--enable-auto-tool-choice" in argv
    assert _option(argv, "--tool-call-parser") == "hermes"
    assert _option(argv, "--reasoning-parser") == "deepseek_r1"
    assert _option(argv, "--structured-outputs-config.backend") == "xgrammar"
    assert argv[-2:] == ["--seed", "7"]


def test_vllm_env_binds_all_cpu_threads_and_sizes_the_kv_cache(tmp_path):
    env = vllm_env(VllmOptions(), cache_root=tmp_path, cpu_threads=2, kv_cache_gib=3, base={"KEEP": "1"})
    assert env == {"KEEP": "1", "VLLM_CACHE_ROOT": str(tmp_path), "VLLM_CPU_KVCACHE_SPACE": "3",
                   "VLLM_CPU_OMP_THREADS_BIND": "0-1"}


def test_vllm_env_on_gpus_shows_only_the_workers_gpus(tmp_path):
    env = vllm_env(VllmOptions(gpus=(1, 3)), cache_root=tmp_path, cpu_threads=8)
    assert env["CUDA_VISIBLE_DEVICES"] == "1,3"
    assert "VLLM_CPU_KVCACHE_SPACE" not in env and "VLLM_CPU_OMP_THREADS_BIND" not in env


def test_engine_paths_follow_the_service_home(monkeypatch, tmp_path):
    monkeypatch.setenv("MODEL_SERVICE_HOME", str(tmp_path))
    version = engine_paths.LLAMA_CPP_PYTHON_VERSION
    cached = tmp_path / "engines" / "llama.cpp" / f"{version}-cpu" / "bin" / "llama-server"
    assert engine_paths.llama_server_path() == cached
    assert engine_paths.llama_server_path("cuda").parent.parent.name == f"{version}-cuda"
    assert engine_paths.vllm_venv_path() == tmp_path / "engines" / "vllm" / f"{engine_paths.VLLM_CPU_VERSION}-cpu"
    assert engine_paths.gguf_converter_path() == tmp_path / "engines" / "llama.cpp" / f"{version}-convert"
    assert engine_paths.find_llama_server() is None and engine_paths.find_gguf_converter() is None  # nothing built
    with pytest.raises(ValueError):
        engine_paths.llama_server_path("rocm")


@pytest.mark.parametrize(("script", "flavour_arg", "expected"), [
    ("build-llama-server.sh", "--cpu", lambda: engine_paths.llama_server_path("cpu")),
    ("build-llama-server.sh", "--cuda", lambda: engine_paths.llama_server_path("cuda")),
    ("llama-convert.sh", "--cpu", lambda: engine_paths.gguf_converter_path()),
    ("vllm-venv.sh", "--cpu", lambda: engine_paths.vllm_venv_path("cpu")),
    ("vllm-venv.sh", "--cuda", lambda: engine_paths.vllm_venv_path("cuda")),
])
def test_scripts_cache_where_the_python_path_rule_says(monkeypatch, tmp_path, script, flavour_arg, expected):
    """The build scripts mirror engine_paths in shell; --print-path shows they agree (builds nothing)."""
    monkeypatch.setenv("MODEL_SERVICE_HOME", str(tmp_path))
    out = subprocess.run(["bash", str(REPO / "scripts" / script), flavour_arg, "--print-path"],
                         capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.strip() == str(expected())
    assert not (tmp_path / "engines").exists()
    monkeypatch.setenv("MODEL_SERVICE_ENGINES", str(tmp_path / "image-engines"))  # the image's own folder
    out = subprocess.run(["bash", str(REPO / "scripts" / script), flavour_arg, "--print-path"],
                         capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.strip() == str(expected()) and str(expected()).startswith(str(tmp_path / "image-engines"))
