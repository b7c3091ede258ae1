"""Whisper transcription engines, chosen by what the model folder holds.

A CTranslate2 folder (``model.bin`` + ``config.json``, as Systran/faster-whisper-* and the starter
package ship) runs on faster-whisper: int8 on a CPU is several times faster than torch. A Hugging Face
Whisper repo (``*.safetensors`` + ``preprocessor_config.json``, e.g. openai/whisper-base) runs on
transformers as it is (``whisper_hf``), so a mirrored hub repo needs no conversion. ``transcribe``
answers ``speech.Transcription``, blocks, and is called from a thread, one request at a time per
engine (admission gives a transcription worker one slot by default).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from model_service.engines.base import EngineInfo, Transcriber
from model_service.engines.speech import Segment, TranscribeParams, Transcription, Word
from model_service.settings import WorkerSettings

log = logging.getLogger(__name__)


def folder_kind(folder: str | Path) -> str:
    """``ctranslate2`` or ``transformers``, from the files present; a clear error otherwise."""
    root = Path(folder)
    if (root / "model.bin").is_file() and (root / "config.json").is_file():
        return "ctranslate2"
    # Hub repos ship preprocessor_config.json; transformers 5 saves the processor as processor_config.json.
    processor = any((root / name).is_file() for name in ("preprocessor_config.json", "processor_config.json"))
    if any(root.glob("*.safetensors")) and processor:
        return "transformers"
    raise ValueError(f"{root} is neither a CTranslate2 Whisper folder (model.bin + config.json) nor a "
                     "Hugging Face Whisper repo (*.safetensors + preprocessor_config.json or processor_config.json)")


def build_whisper_engine(settings: WorkerSettings) -> Transcriber:
    if not settings.model_path:
        raise ValueError("a transcription worker needs MODEL_PATH (a Whisper model folder)")
    if folder_kind(settings.model_path) == "ctranslate2":
        return FasterWhisperEngine(settings)
    from model_service.engines.whisper_hf import TransformersWhisperEngine  # imports torch: only when needed

    return TransformersWhisperEngine(settings)


def _ct2_device(setting: str) -> str:
    if setting != "auto":
        return "cuda" if setting.startswith("cuda") else setting
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


class FasterWhisperEngine(Transcriber):
    name = "faster-whisper"

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.device = _ct2_device(settings.device)
        compute = settings.whisper_compute_type
        self.compute_type = ("float16" if self.device == "cuda" else "int8") if compute == "auto" else compute
        self.model: Any = None
        self._lock = threading.Lock()  # one decode at a time: CTranslate2 already uses every thread

    def load(self) -> None:
        from faster_whisper import WhisperModel

        index = self.settings.gpu_indices[0] if self.device == "cuda" and self.settings.gpu_indices else 0
        self.model = WhisperModel(str(self.settings.model_path), device=self.device, device_index=index,
                                  compute_type=self.compute_type, cpu_threads=self.cpu_threads(),
                                  local_files_only=True)
        log.info("loaded %s on %s (%s)", self.settings.model_path, self.device, self.compute_type)

    def cpu_threads(self) -> int:
        """CTranslate2's ``cpu_threads`` (0: its own default, one per core)."""
        return self.settings.model_threads(self.settings.whisper_cpu_threads or None) or 0

    def close(self) -> None:
        self.model = None

    def info(self) -> EngineInfo:
        return EngineInfo(engine=self.name, device=self.device, dtype=self.compute_type)

    def transcribe(self, audio: np.ndarray, params: TranscribeParams) -> Transcription:
        with self._lock:
            segments, info = self.model.transcribe(
                audio, task=params.task, language=params.language, initial_prompt=params.prompt or None,
                temperature=params.temperature or 0.0, beam_size=self.settings.whisper_beam_size,
                word_timestamps=params.word_timestamps, vad_filter=False,
            )
            # The generator decodes lazily: consume it inside the lock.
            out = [_segment(i, s) for i, s in enumerate(segments)]
        words = [Word(w.word, round(float(w.start), 2), round(float(w.end), 2))
                 for s in out for w in s[1]]
        segs = [s[0] for s in out]
        return Transcription(text="".join(s.text for s in segs).strip(), language=info.language,
                             duration=round(float(info.duration), 2), segments=segs, words=words)


def _segment(index: int, s: Any) -> tuple[Segment, list[Any]]:
    seg = Segment(id=index, seek=int(s.seek), start=round(float(s.start), 2), end=round(float(s.end), 2),
                  text=s.text, tokens=[int(t) for t in s.tokens], temperature=float(s.temperature or 0.0),
                  avg_logprob=float(s.avg_logprob), compression_ratio=float(s.compression_ratio),
                  no_speech_prob=float(s.no_speech_prob))
    return seg, list(s.words or [])
