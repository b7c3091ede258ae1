"""scripts/build-llama-server.sh's caching rules, with a stand-in cmake (the real build takes minutes):
a failed build leaves nothing behind, a good one lands at the cached path in one rename, and a second
run builds nothing."""

from __future__ import annotations

import io
import os
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


def _sdist(path: Path) -> Path:
    """A stand-in sdist with the vendored tree's layout."""
    with tarfile.open(path, "w:gz") as tar:
        data = b"project(llama.cpp)\n"
        info = tarfile.TarInfo(f"llama_cpp_python-{VERSION}/vendor/llama.cpp/CMakeLists.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "cmake").write_text(FAKE_CMAKE)
    (bin_dir / "cmake").chmod(0o755)
    full_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "MODEL_SERVICE_HOME": str(tmp_path / "home"),
                "LLAMA_CPP_SDIST": str(_sdist(tmp_path / f"llama_cpp_python-{VERSION}.tar.gz")),
                "FAKE_CMAKE_CALLS": str(tmp_path / "calls"), **env}
    return subprocess.run(["bash", str(REPO / "scripts" / "build-llama-server.sh")], env=full_env,
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
