"""Real processes: the whisper-base starter imported into a local store, a transcription worker that
starts from it (``--model-source store``), a gateway, and the official openai SDK."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from model_registry.catalog import Catalog
from model_registry.settings import ModelRegistrySettings
from model_registry.sources.folder import import_folder
from model_registry.storage import open_storage
from stack.starters import STARTER_TRANSCRIPTION
from tests.helpers.model_registry import registry_env
from tests.helpers.ports import free_port
from tests.helpers.processes import process, settled_health

pytestmark = pytest.mark.e2e
MODEL = STARTER_TRANSCRIPTION.model_id


def test_sdk_transcribes_speech_through_gateway_from_store(whisper_path: Path, speech_wav: Path,
                                                           tmp_path: Path) -> None:
    settings = ModelRegistrySettings(_env_file=None, storage_backend="local", local_root=tmp_path / "store")
    store = open_storage(settings)
    import_folder(Catalog(store), MODEL, whisper_path, "transcription")
    store.close()
    env = {**registry_env(settings), "HF_HUB_OFFLINE": "1", "WORKER_CACHE_DIR": str(tmp_path / "cache"),
           "WORKER_WHISPER_BEAM_SIZE": "1"}
    worker_port, gateway_port = free_port(), free_port()
    worker_url = f"http://127.0.0.1:{worker_port}"
    argv = ["worker", "--port", str(worker_port), "--model-source", "store", "--model-name", MODEL,
            "--model-type", "transcription", "--log-level", "warning"]
    with process(argv, env, tmp_path / "worker.log") as worker:
        health = settled_health(worker_url, worker, tmp_path / "worker.log")
        assert health.status_code == 200 and health.json()["engine"] == "faster-whisper", health.text
        gateway_argv = ["gateway", "--port", str(gateway_port), "--workers", worker_url, "--log-level", "warning"]
        with process(gateway_argv, {}, tmp_path / "gateway.log") as gateway:
            settled_health(f"http://127.0.0.1:{gateway_port}", gateway, tmp_path / "gateway.log")
            with openai.OpenAI(base_url=f"http://127.0.0.1:{gateway_port}/v1", api_key="unused", max_retries=2,
                               timeout=120) as client:
                with open(speech_wav, "rb") as audio:
                    result = client.audio.transcriptions.create(model=MODEL, file=audio)
                with open(speech_wav, "rb") as audio:
                    vtt = client.audio.transcriptions.create(model=MODEL, file=audio, response_format="vtt")
                with pytest.raises(openai.BadRequestError) as bad:
                    client.audio.transcriptions.create(model=MODEL, file=("notes.txt", b"plain text\n" * 40))
    text = result.text.lower()
    assert "quick" in text and "fox" in text and "lazy dog" in text, result.text
    assert str(vtt).startswith("WEBVTT") and "fox" in str(vtt).lower()
    assert bad.value.status_code == 400 and bad.value.code == "invalid_audio"
