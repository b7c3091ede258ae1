"""What every engine that loads a Hugging Face folder with torch shares, written once.

``TransformersEngine``: ``MODEL_PATH`` must name the folder, ``device``/``dtype`` of ``auto``
resolve to what this host runs well (``hardware``), and ``info()`` reports them with the context
length and embedding size once known. ``TransformersGenerator`` adds what the text and the vision
generator share: prompts and token pieces from the tokenizer, end-of-sequence ids, the chat
template's errors as 400s, and one ``llm_batch.Sequence`` per request streamed back through
``threads.thread_stream``; each subclass only says which thread runs the sequence.

Loading offline is not set here: the worker sets it once at start-up, for every engine
(``model_service.model_files``).
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from jinja2 import TemplateError

from common.errors import InvalidRequestError
from model_service.engines.base import Delta, Engine, EngineInfo, SamplingParams, TextGenerator
from model_service.engines.constrained import GrammarTokenizer
from model_service.engines.hardware import dtype_name, resolve_device, resolve_dtype
from model_service.engines.llm_batch import Sequence
from model_service.engines.threads import Emit, thread_stream
from model_service.settings import WorkerSettings


class TransformersEngine(Engine):
    """A torch model loaded from a local Hugging Face folder; subclasses load it in ``load``."""

    folder = "a folder with the Hugging Face model"  # what MODEL_PATH must hold, for the error

    def __init__(self, settings: WorkerSettings) -> None:
        if not settings.model_path:
            raise ValueError(f"{_article(settings.model_type)} {settings.model_type} worker needs "
                             f"MODEL_PATH ({self.folder})")
        self.settings = settings
        self.model_path: str = settings.model_path
        self.device = resolve_device(settings.device)
        self.dtype = resolve_dtype(settings.dtype, self.device)
        self.model: Any = None
        self.max_model_len: int | None = None  # set by load where the model has one
        self.embedding_dims: int | None = None
        self.vocab_size: int | None = None  # set by load: the width of the logits, or the tokenizer's size
        self.matryoshka_dims: tuple[int, ...] | None = None

    def info(self) -> EngineInfo:
        return EngineInfo(engine=self.name, device=self.device, dtype=dtype_name(self.dtype),
                          max_model_len=self.max_model_len, embedding_dims=self.embedding_dims,
                          vocab_size=self.vocab_size, matryoshka_dims=self.matryoshka_dims)

    def placed(self, model: Any) -> Any:
        """The loaded model on the engine's device, in inference mode."""
        return model.to(self.device).eval()


class TransformersGenerator(TransformersEngine, TextGenerator):
    """A text-generating transformers model; ``start`` puts one sequence on the engine's thread."""

    def __init__(self, settings: WorkerSettings) -> None:
        super().__init__(settings)
        self.tokenizer: Any = None
        self.eos_ids: set[int] = set()
        self.grammar_tokenizer: GrammarTokenizer | None = None  # set by engines that constrain decoding

    def text_prompt(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def piece(self, token: int) -> str:
        """One token's own text (special tokens included), as logprobs show it."""
        return self.tokenizer.decode([token])

    def generate(self, prompt_ids: list[int], params: SamplingParams, media: Any = None) -> AsyncIterator[Delta]:
        def submit(emit: Emit, cancel: threading.Event) -> None:
            seq = Sequence(prompt_ids, params, emit, device=self.device, decode=self.decode, piece=self.piece,
                           eos_ids=self.eos_ids, cancel=cancel, grammar_tokenizer=self.grammar_tokenizer)
            self.start(seq, media)

        return thread_stream(submit)

    @abstractmethod
    def start(self, seq: Sequence, media: Any) -> None:
        """Hand ``seq`` to the generation thread, which emits its deltas and then ``threads.DONE``;
        RuntimeError when the model is not loaded."""


@contextmanager
def chat_template_errors(*more: type[Exception]) -> Iterator[None]:
    """A chat template (or processor) that rejects the messages is the client's 400, not a 500."""
    try:
        yield
    except (TemplateError, *more) as exc:
        what = "chat template" if isinstance(exc, TemplateError) else "model's processor"
        raise InvalidRequestError(f"The {what} rejected these messages: {exc}",
                                  param="messages", code="invalid_messages") from exc


def chat_prompt_ids(tokenizer: Any, messages: list[dict[str, Any]],
                    tools: list[dict[str, Any]] | None = None) -> list[int]:
    """Token ids of ``tokenizer``'s chat template applied to ``messages`` (and ``tools``) with the
    generation prompt (the template adds the special tokens, so the tokenizer adds none); 400
    without a template."""
    if not getattr(tokenizer, "chat_template", None):
        raise InvalidRequestError("This model has no chat template; use /v1/completions instead.",
                                  code="no_chat_template")
    with chat_template_errors():
        text = tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=False,
                                             add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def template_takes_tools(tokenizer: Any) -> bool:
    """Whether the chat template reads ``tools`` (there is no flag for it; vLLM and Ollama look too)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates: the default one, or the one for tool use
        template = template.get("tool_use") or template.get("default")
    return isinstance(template, str) and "tools" in template


def _article(model_type: str) -> str:
    return "an" if model_type in ("llm", "embedding") else "a"


def logits_width(model: Any) -> int:
    """How many token ids the model scores (its text part's vocabulary; may exceed the tokenizer's)."""
    return int(model.config.get_text_config().vocab_size)
