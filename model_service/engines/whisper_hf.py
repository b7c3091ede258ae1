"""Whisper on transformers, for Hugging Face Whisper repos (``*.safetensors`` + ``preprocessor_config.json``).

faster-whisper is the faster choice on a CPU, but a site that mirrored openai/whisper-* (or a fine-tune)
from the hub should not have to convert it first: this engine serves such a folder as it is, with the
same ``speech`` types in and out, so routes and formats do not know which library ran.

``generate`` does the windowing itself: audio up to 30 s is one padded window (short-form), longer
audio is passed unpadded with its attention mask and decoded window after window (long-form, which
needs timestamp tokens). ``return_segments=True`` answers the segments with start/end seconds in both
cases. Word timestamps need cross-attention alignment heads tuned per checkpoint, so they are refused
rather than guessed. ``transcribe`` blocks and is called from a thread, one request at a time.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from common.errors import InvalidRequestError
from model_service.engines.base import Transcriber, UnsupportedError
from model_service.engines.hardware import apply_torch_threads
from model_service.engines.speech import SAMPLE_RATE, Segment, TranscribeParams, Transcription
from model_service.engines.transformers_base import TransformersEngine
from model_service.settings import WorkerSettings

log = logging.getLogger(__name__)
WINDOW_SECONDS = 30  # Whisper's encoder sees exactly 30 s (3000 mel frames) at a time
FRAMES_PER_SECOND = 100  # mel frames per second: what a segment's ``seek`` counts in


class TransformersWhisperEngine(TransformersEngine, Transcriber):
    name = "transformers-whisper"
    folder = "a Whisper model folder"

    def __init__(self, settings: WorkerSettings) -> None:
        super().__init__(settings)
        self.processor: Any = None
        self._lock = threading.Lock()  # one decode at a time: torch already uses every core / the whole GPU

    def load(self) -> None:
        from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

        self.processor = AutoProcessor.from_pretrained(self.model_path)
        self.model = self.placed(AutoModelForSpeechSeq2Seq.from_pretrained(self.model_path, dtype=self.dtype))
        log.info("loaded %s on %s (%s)", self.model_path, self.device, self.dtype)

    def close(self) -> None:
        self.model = self.processor = None

    def transcribe(self, audio: np.ndarray, params: TranscribeParams) -> Transcription:
        if params.word_timestamps:
            raise UnsupportedError("Word timestamps are not available with the transformers Whisper engine; "
                                   "ask for segment timestamps or serve a CTranslate2 (faster-whisper) folder.",
                                   param="timestamp_granularities")
        import torch

        with self._lock, torch.inference_mode():
            apply_torch_threads(self.settings.model_threads())  # a pool thread: set it in this one
            inputs = self._features(audio)
            language = params.language or self._detect_language(inputs["input_features"])
            kwargs = self._generate_kwargs(params, language)
            # Short audio is one call on one padded window: without this, generate would go on
            # decoding the padding after the first segment that ends early.
            kwargs["force_unique_generate_call"] = "attention_mask" not in inputs
            out = self.model.generate(**inputs, **kwargs)
        duration = round(len(audio) / SAMPLE_RATE, 2)
        segments = self._segments(out["segments"][0], params.temperature, duration)
        return Transcription(text="".join(s.text for s in segments).strip(), language=language,
                             duration=duration, segments=segments)

    def _features(self, audio: np.ndarray) -> dict[str, Any]:
        """Log-mel features on the model's device and dtype: one padded 30 s window for short audio;
        for longer audio every frame plus the attention mask, which switches ``generate`` to long-form."""
        long_form = len(audio) > WINDOW_SECONDS * SAMPLE_RATE
        extra = {"truncation": False, "padding": "longest", "return_attention_mask": True} if long_form else {}
        feats = self.processor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt", **extra)
        inputs = {"input_features": feats["input_features"].to(self.device, self.dtype)}
        if long_form:
            inputs["attention_mask"] = feats["attention_mask"].to(self.device)
        return inputs

    def _detect_language(self, features: Any) -> str:
        """The ISO code of the spoken language, from the first window (as OpenAI reports one language
        per file); English-only checkpoints have nothing to detect."""
        config = self.model.generation_config
        if not getattr(config, "is_multilingual", False) or not getattr(config, "lang_to_id", None):
            return "en"
        lang_id = int(self.model.detect_language(features[:, :, : WINDOW_SECONDS * FRAMES_PER_SECOND])[0])
        token = self.processor.tokenizer.convert_ids_to_tokens(lang_id)
        return token.strip("<|>") if isinstance(token, str) else "en"

    def _generate_kwargs(self, params: TranscribeParams, language: str) -> dict[str, Any]:
        config = self.model.generation_config
        kwargs: dict[str, Any] = {"return_timestamps": True, "return_segments": True,
                                  "num_beams": self.settings.whisper_beam_size}
        if getattr(config, "is_multilingual", False):
            # English-only checkpoints know neither language nor task tokens (they cannot translate).
            if f"<|{language}|>" not in (config.lang_to_id or {}):
                raise InvalidRequestError(f"Language {language!r} is not one this Whisper model knows; "
                                          "use an ISO 639-1 code such as 'en'.", param="language",
                                          code="invalid_value")
            kwargs.update(language=language, task=params.task)
        elif params.task == "translate":
            raise UnsupportedError("This Whisper model is English-only and cannot translate.", param="model")
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature)
        if params.prompt:
            ids = self.processor.get_prompt_ids(params.prompt, return_tensors="pt")
            kwargs["prompt_ids"] = ids.to(self.device)
        return kwargs

    def _segments(self, raw: list[dict[str, Any]], temperature: float, duration: float) -> list[Segment]:
        """``speech.Segment``s from generate's segment dicts (start/end in seconds, timestamp tokens
        included); figures the transformers engine does not measure keep their neutral values. Times
        are kept inside the audio: a last window is padded, and the model may stamp into the padding."""
        tokenizer = self.processor.tokenizer
        out: list[Segment] = []
        for item in raw:
            tokens = [int(t) for t in item["tokens"]]
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            start, end = min(float(item["start"]), duration), min(float(item["end"]), duration)
            if not text.strip() or (out and start >= duration):
                continue
            out.append(Segment(id=len(out), seek=int(start * FRAMES_PER_SECOND), start=round(start, 2),
                               end=round(max(end, start), 2), text=text, tokens=tokens, temperature=temperature))
        return out
