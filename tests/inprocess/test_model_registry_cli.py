"""``model-service models ...`` store commands (``add_models_commands``) against a local-folder store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.model_registry import run_models_cli as run

MODEL = "org/small"


@pytest.fixture
def store_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("MODEL_REGISTRY_STORAGE_BACKEND", "local")
    monkeypatch.setenv("MODEL_REGISTRY_LOCAL_ROOT", str(tmp_path / "store"))
    return tmp_path


def test_cli_round_trip(store_env: Path, small_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "import", str(small_model), "--id", MODEL, "--type", "embedding", "--revision", "r1")
    assert code == 0 and f"{MODEL}@r1" in out
    code, out, _ = run(capsys, "list", "--json")
    [model] = json.loads(out)
    assert model["id"] == MODEL and model["current"] == "r1" and model["type"] == "embedding"
    assert run(capsys, "import", str(small_model), "--id", MODEL, "--revision", "r2")[0] == 0
    code, out, _ = run(capsys, "alias", MODEL, "current", "r1")
    assert code == 0 and "current -> r1" in out

    bundle = store_env / "small.tar"
    assert run(capsys, "export", MODEL, "-o", str(bundle), "--all-revisions")[0] == 0
    assert run(capsys, "rm", MODEL)[0] == 0
    assert json.loads(run(capsys, "list", "--json")[1]) == []
    code, out, _ = run(capsys, "import-bundle", str(bundle))
    assert code == 0 and "r1" in out and "r2" in out
    code, out, _ = run(capsys, "fetch", MODEL, "--cache-dir", str(store_env / "cache"))
    folder = Path(out.strip())
    assert code == 0 and folder.name == "r1"
    assert (folder / "model.safetensors").read_bytes() == (small_model / "model.safetensors").read_bytes()
    assert run(capsys, "rm", MODEL, "--revision", "r1")[0] == 0
    assert json.loads(run(capsys, "list", "--json")[1])[0]["current"] == "r2"


def test_cli_errors_are_one_line(store_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "rm", "org/unknown")
    assert code == 1 and err.startswith("error: ") and "org/unknown" in err
    code, _, err = run(capsys, "import", "relative/path", "--id", "a/../b")
    assert code == 1 and "Invalid model id" in err
    code, _, err = run(capsys, "export", MODEL, "-o", "x.tar")
    assert code == 1 and "not in the registry" in err
