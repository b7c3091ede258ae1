"""The one small interface every engine implements.

Requests are the unit of work: ``generate`` is an async iterator of deltas for one sequence, and
closing it early (client gone, stop string seen) is how a caller cancels. That keeps the interface
the same when a continuous-batching scheduler replaces today's one-sequence-at-a-time internals.
Engines that cannot do something raise ``UnsupportedError`` instead of half-doing it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from common.errors import InvalidRequestError


class UnsupportedError(InvalidRequestError):
    """The engine (or its model type) cannot serve this request."""

    code = "unsupported"


@dataclass(frozen=True)
class EngineInfo:
    """Facts for /health and /v1/models, known once the model is loaded."""

    engine: str
    device: str | None = None
    dtype: str | None = None
    max_model_len: int | None = None
    embedding_dims: int | None = None


@dataclass(frozen=True)
class SamplingParams:
    """What one sequence is generated with; ``temperature == 0`` means greedy."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class Delta:
    """One step of a sequence: newly decoded text (may be empty while bytes are incomplete), the
    token ids it came from, and ``finish_reason`` on the last step (``stop`` = end-of-sequence
    token, ``length`` = max_tokens reached)."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass
class Embeddings:
    vectors: list[list[float]]
    prompt_tokens: int


@dataclass
class ChatPrompt:
    """A chat prompt ready to generate from: token ids plus any engine-specific model inputs that go
    with them (``media``: e.g. a vision model's pixel values), handed back to ``generate``."""

    ids: list[int]
    media: Any = None


class Engine(ABC):
    """Load once, then answer many requests. ``load``/``close`` block and run in a thread."""

    name: str = "engine"
    # Set by the worker: told the rows of every batched step (metrics); engines that batch call it.
    batch_observer: Callable[[int], None] | None = None

    @abstractmethod
    def load(self) -> None: ...

    def close(self) -> None:
        """Free the model and stop engine threads; safe to call when never loaded."""
        return None

    @abstractmethod
    def info(self) -> EngineInfo: ...

    def observe_batch(self, rows: int) -> None:
        """Report one batched step of ``rows`` sequences or inputs (any thread)."""
        if self.batch_observer is not None:
            self.batch_observer(rows)

    # --- text generation ------------------------------------------------------------------
    def chat_prompt(self, messages: list[dict[str, Any]]) -> list[int]:
        """Token ids of the chat template applied to ``messages`` with the generation prompt."""
        raise UnsupportedError("This model does not support chat completions.")

    def chat_inputs(self, messages: list[dict[str, Any]], images: list[Any]) -> ChatPrompt:
        """The prompt for ``messages`` whose content may be a list of ``{"type": "text"|"image"}``
        parts, with ``images`` (decoded PIL images) in the order of the image parts. Text-only
        engines take no images."""
        if images:
            raise UnsupportedError("This model does not accept images.", param="messages",
                                   code="images_not_supported")
        return ChatPrompt(self.chat_prompt(messages))

    def text_prompt(self, text: str) -> list[int]:
        """Token ids of a raw completion prompt (with the model's usual special tokens)."""
        raise UnsupportedError("This model does not support text completions.")

    def decode(self, token_ids: list[int]) -> str:
        raise UnsupportedError("This model does not decode tokens.")

    def generate(self, prompt_ids: list[int], params: SamplingParams, media: Any = None) -> AsyncIterator[Delta]:
        """Deltas of one sequence; ``media`` is ``ChatPrompt.media`` (only vision engines get one)."""
        raise UnsupportedError("This model does not generate text.")

    # --- embeddings -----------------------------------------------------------------------
    async def embed(self, texts: list[str]) -> Embeddings:
        raise UnsupportedError("This model does not produce embeddings.")

    # --- speech ---------------------------------------------------------------------------
    def transcribe(self, audio: Any, params: Any) -> Any:
        """Blocking (callers run it in a thread): 16 kHz mono float32 samples and
        ``speech.TranscribeParams`` -> ``speech.Transcription``."""
        raise UnsupportedError("This model does not transcribe audio.")
