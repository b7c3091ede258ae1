"""The small interface every engine implements: a lifecycle, plus one class per capability.

``Engine`` is what the worker needs from any engine (load, close, info). What an engine can serve is
the capability classes it subclasses, as infinity splits its embedders from its generators:
``TextGenerator`` (chat and text completions), ``Embedder`` (embeddings), ``Reranker`` (rerank),
``Transcriber`` (speech to text). A worker only routes a model type's endpoints to an engine of the matching capability
(``engines.CAPABILITIES``), so an engine implements exactly what it serves and nothing else.

Requests are the unit of work: ``generate`` is an async iterator of deltas for one sequence, and
closing it early (client gone, stop string seen) is how a caller cancels. That keeps the interface
the same whether an engine decodes one sequence at a time, batches continuously, or relays a
supervised server. Engines that cannot do part of a request raise ``UnsupportedError`` instead of
half-doing it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from common.errors import InvalidRequestError

if TYPE_CHECKING:
    from model_service.engines.speech import TranscribeParams, Transcription


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
    vocab_size: int | None = None  # token ids run from 0 to this (exclusive): logit_bias keys, token inputs
    # Sizes an embedding model was trained to be cut to (Matryoshka): None = not declared, () = any.
    matryoshka_dims: tuple[int, ...] | None = None


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
    top_k: int = 0  # 0: off
    min_p: float = 0.0
    repetition_penalty: float = 1.0  # vLLM's (and transformers') multiplicative one, prompt included
    logit_bias: dict[int, float] = field(default_factory=dict)
    # What the answer must be, for engines with ``TextGenerator.structured_outputs``: an llguidance
    # grammar (``engines.constrained``) and the JSON Schema it was built from, for engines that take
    # schemas natively (llama-server's ``json_schema``).
    grammar: str | None = None
    json_schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class SampledToken:
    """One generated token as the engine saw it: its text, its log-probability and, when asked, the
    most likely alternatives (text, logprob). ``model_service.chunks`` turns it into the wire type
    ``common.protocol.TokenLogprob``."""

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
    logprobs: list[SampledToken] = field(default_factory=list)


@dataclass
class Embeddings:
    # One vector per input: lists of floats, or rows of a 2-D float32 numpy array (the route writes
    # the response straight from the array's buffer, model_service.vectors).
    vectors: Any
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

    async def serve(self) -> None:
        """The async part of loading, awaited on the worker's event loop after ``load()``: a
        supervised-server engine starts its child here and returns once it answers."""
        return None

    async def aclose(self) -> None:
        """The async part of closing, awaited on the worker's loop before ``close()``: stop the child."""
        return None

    def unavailable(self) -> str | None:
        """Why a loaded engine cannot serve right now (its child server restarting or given up), or
        None; the worker's ``/health`` answers 503 with this while it is set."""
        return None

    def observe_batch(self, rows: int) -> None:
        """Report one batched step of ``rows`` sequences or inputs (any thread)."""
        if self.batch_observer is not None:
            self.batch_observer(rows)


class TextGenerator(Engine):
    """Chat and text completions: prompts become token ids, ``generate`` streams one sequence.

    Stop strings, n choices, the context-length cap, usage and SSE shapes are the worker's
    (``model_service.generation``), the same for every generator; so are tool calls and structured
    outputs (``model_service.tools``), given two facts from the engine: whether it decodes under a
    grammar (``structured_outputs``) and whether its chat template renders tools."""

    structured_outputs: bool = False

    @abstractmethod
    def chat_prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """Token ids of the chat template applied to ``messages`` with the generation prompt; ``tools``
        (OpenAI's tool dicts) come only to engines whose ``template_takes_tools()`` is true."""

    def template_takes_tools(self) -> bool:
        """The chat template renders ``tools`` and tool-call history itself."""
        return False

    def chat_inputs(self, messages: list[dict[str, Any]], images: list[Any]) -> ChatPrompt:
        """The prompt for ``messages`` whose content may be a list of ``{"type": "text"|"image"}``
        parts, with ``images`` (decoded PIL images) in the order of the image parts. Text-only
        generators take no images."""
        if images:
            raise UnsupportedError("This model does not accept images.", param="messages",
                                   code="images_not_supported")
        return ChatPrompt(self.chat_prompt(messages))

    @abstractmethod
    def text_prompt(self, text: str) -> list[int]:
        """Token ids of a raw completion prompt (with the model's usual special tokens)."""

    @abstractmethod
    def generate(self, prompt_ids: list[int], params: SamplingParams, media: Any = None) -> AsyncIterator[Delta]:
        """Deltas of one sequence; ``media`` is ``ChatPrompt.media`` (None but for vision prompts).
        Closing the iterator early cancels the sequence."""


class Embedder(Engine):
    """Embeddings: texts in, one vector each plus the prompt tokens they counted."""

    @abstractmethod
    async def embed(self, texts: list[str]) -> Embeddings: ...

    def decode_tokens(self, token_ids: list[int]) -> str:
        """The text of the model's own token ids (special tokens dropped), for token-id inputs; the ids
        are already checked against ``info().vocab_size``."""
        raise UnsupportedError("This engine does not take token ids as input; send text.", param="input")


@dataclass
class Scores:
    """One relevance score per document, in the order given (higher: more relevant)."""

    scores: list[float]
    prompt_tokens: int


class Reranker(Engine):
    """Rerank: a query and documents in, one relevance score per document."""

    @abstractmethod
    async def rerank(self, query: str, documents: list[str]) -> Scores: ...


class Transcriber(Engine):
    """Speech to text; blocking, so callers run it in a thread."""

    @abstractmethod
    def transcribe(self, audio: Any, params: TranscribeParams) -> Transcription:
        """16 kHz mono float32 samples -> the transcription (or translation) of them."""
