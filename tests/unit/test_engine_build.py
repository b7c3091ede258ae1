"""scripts/build-llama-server.sh's caching rules, with a stand-in cmake (the real build takes minutes)
and a stand-in pip: a failed build leaves nothing behind, a good one lands at the cached path in one
rename with the GGUF converter beside it, a second run builds nothing, and a cache holding only the
binary gets the converter added without a rebuild."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from model_service import engine_paths

REPO = Path(__file__).resolve().parents[2]
VERSION = engine_paths.LLAMA_CPP_PYTHON_VERSION

# Records each call; `--build` makes the binary the real build would, unless FAKE_CMAKE_FAIL is set.
FAKE_CMAKE = """#!/usr/bin/env bash
echo "$@" >> "$FAKE_CMAKE_CALLS"
[ -n "${FAKE_CMAKE_FAIL:-}" ] && [ "$1" = --build ] && exit 1
if [ "$1" = --build ]; then
  mkdir -p "$2/bin" && printf '#!/bin/sh\\necho fake llama-server\\n' > "$2/bin/llama-server"
  chmod +x "$2/bin/llama-server"
fi
exit 0
"""
# `python -m pip install ... --target DIR REQ` (the converter's sentencepiece): records REQ, makes DIR/sentencepiece.
FAKE_PYTHON = """#!/usr/bin/env bash
echo "$@" >> "$FAKE_PIP_CALLS"
[ -n "${FAKE_PIP_FAIL:-}" ] && exit 1
args=("$@")
for i in "${!args[@]}"; do
  [ "${args[$i]}" = --target ] && mkdir -p "${args[$((i + 1))]}/sentencepiece"
done
exit 0
"""
# The vendored tree's files the build and the converter take from the sdist.
VENDORED = {"CMakeLists.txt": "project(llama.cpp)\n", "convert_hf_to_gguf.py": "# converter\n",
            "conversion/__init__.py": "", "gguf-py/gguf/__init__.py": "", "LICENSE": "MIT\n",
            "requirements/requirements-convert_legacy_llama.txt": "numpy\nsentencepiece>=0.1.98,<0.3.0\n"}


def _sdist(path: Path) -> Path:
    """A stand-in sdist with the vendored tree's layout."""
    with tarfile.open(path, "w:gz") as tar:
        for name, text in VENDORED.items():
            data = text.encode()
            info = tarfile.TarInfo(f"llama_cpp_python-{VERSION}/vendor/llama.cpp/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _run(tmp_path: Path, script: str = "build-llama-server.sh", **env: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("cmake", FAKE_CMAKE), ("python", FAKE_PYTHON)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    full_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "MODEL_SERVICE_HOME": str(tmp_path / "home"),
                "LLAMA_CPP_SDIST": str(_sdist(tmp_path / f"llama_cpp_python-{VERSION}.tar.gz")),
                "PYTHON": str(bin_dir / "python"), "FAKE_PIP_CALLS": str(tmp_path / "pip-calls"),
                "FAKE_CMAKE_CALLS": str(tmp_path / "calls"), **env}
    return subprocess.run(["bash", str(REPO / "scripts" / script)], env=full_env,
                          capture_output=True, text=True, timeout=60)


def test_a_failed_build_leaves_nothing_then_a_good_one_is_cached_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_SERVICE_HOME", str(tmp_path / "home"))
    expected = engine_paths.llama_server_path()
    failed = _run(tmp_path, FAKE_CMAKE_FAIL="1")
    assert failed.returncode != 0
    assert not expected.parent.parent.exists()
    assert [p.name for p in expected.parent.parent.parent.iterdir()] == [".lock"]  # no half build left

    built = _run(tmp_path)
    assert built.returncode == 0, built.stderr
    assert built.stdout.strip() == str(expected)
    assert engine_paths.find_llama_server() == expected
    flags = next(line for line in (tmp_path / "calls").read_text().splitlines() if line.startswith("-S"))
    for flag in ("-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_OPENSSL=OFF",
                 "-DLLAMA_USE_PREBUILT_UI=OFF"):
        assert flag in flags
    assert "GGML_CUDA" not in flags
    assert "flavour cpu" in (expected.parent.parent / "BUILD_INFO").read_text()
    converter = engine_paths.find_gguf_converter()
    assert converter == engine_paths.gguf_converter_path()
    assert {"convert_hf_to_gguf.py", "conversion", "gguf-py", "site"} <= {p.name for p in converter.iterdir()}
    assert (converter / "site" / "sentencepiece").is_dir()
    assert "sentencepiece>=0.1.98,<0.3.0" in (tmp_path / "pip-calls").read_text()  # the sdist's own pin

    calls = (tmp_path / "calls").read_text()
    again = _run(tmp_path)
    assert again.stdout.strip() == str(expected)
    assert (tmp_path / "calls").read_text() == calls  # cached: cmake not called again


def test_the_cuda_flavour_builds_with_ggml_cuda_in_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_SERVICE_HOME", str(tmp_path / "home"))
    built = _run(tmp_path, LLAMA_SERVER_FLAVOUR="cuda")
    assert built.stdout.strip() == str(engine_paths.llama_server_path("cuda")), built.stderr
    assert "-DGGML_CUDA=ON" in (tmp_path / "calls").read_text()
    assert engine_paths.find_llama_server("cpu") is None


def test_a_cache_with_only_the_binary_gets_the_converter_without_a_rebuild(tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_SERVICE_HOME", str(tmp_path / "home"))
    assert _run(tmp_path).returncode == 0
    converter = engine_paths.find_gguf_converter()
    assert converter is not None
    shutil.rmtree(converter)  # a machine that built llama-server before the converter was part of it
    calls = (tmp_path / "calls").read_text()

    again = _run(tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == str(engine_paths.llama_server_path())
    assert engine_paths.find_gguf_converter() == converter
    assert (tmp_path / "calls").read_text() == calls  # cmake not called again

    # A failed set-up (the wheel cannot be installed) leaves no half converter behind.
    shutil.rmtree(converter)
    failed = _run(tmp_path, "llama-convert.sh", FAKE_PIP_FAIL="1")
    assert failed.returncode != 0
    assert engine_paths.find_gguf_converter() is None
    assert sorted(p.name for p in converter.parent.iterdir()) == [".lock", f"{VERSION}-cpu"]
