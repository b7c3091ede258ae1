"""OpenAI wire types: the requests the platform accepts and the responses it sends.

Requests tolerate unknown fields (clients such as Chat UI send extras); known fields are checked
strictly so a wrong type is a 400 that names the parameter, never a 500 later on. Strictly means no
coercion either, as OpenAI's API does: ``"logprobs": false`` is not ``0``, ``"stream": "yes"`` is not
``true`` and ``"n": true`` is not ``1``.
"""

from __future__ import annotations

import copy
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

MAX_STOP_SEQUENCES = 4
MAX_N = 16
MAX_METADATA_KEYS = 16
# The error type (and so the OpenAI ``code``) of an OpenAI field this server knows but does not do.
UNSUPPORTED = "unsupported_parameter"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True)


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=(), strict=True)


def refuse_unless(field: str, value: Any, no_ops: tuple[Any, ...], why: str) -> Any:
    """An OpenAI field this server cannot do is refused unless its value asks for nothing (``tools: []``,
    ``tool_choice: "none"``): a 400 ``unsupported_parameter`` naming it, never silently dropped, so a
    client (an agent framework) learns at once that the feature is missing rather than getting an
    ordinary answer it misreads."""
    if value is None or any(type(value) is type(v) and value == v for v in no_ops):  # 0 is not False
        return value
    allowed = " or ".join(repr(v) for v in no_ops) if no_ops else "null"
    raise PydanticCustomError(UNSUPPORTED, "'{field}' is not supported by this server ({why}); send {allowed} or leave "
                              "it out.", {"field": field, "why": why, "allowed": allowed})


_FUNCTIONS = "the deprecated functions API; send tools and tool_choice"
# Chat fields refused unless their value is a no-op: field -> (no-op values, why).
CHAT_REFUSED: dict[str, tuple[tuple[Any, ...], str]] = {
    "functions": (([],), _FUNCTIONS),
    "function_call": (("none",), _FUNCTIONS),
    "audio": ((), "no audio output"),
    "modalities": ((["text"],), "text output only"),
    "prediction": ((), "no predicted outputs"),
    "web_search_options": ((), "no web search"),
    "reasoning_effort": ((), "no reasoning models"),
    "verbosity": (("medium",), "no verbosity control"),
    "store": ((False,), "completions are not stored"),
    "service_tier": (("auto", "default"), "one service tier"),
}
# Fields of a chat message that cannot be rendered: the deprecated function call, audio.
MESSAGE_REFUSED: dict[str, tuple[tuple[Any, ...], str]] = {
    "function_call": ((), _FUNCTIONS),
    "audio": ((), "no audio input"),
}
COMPLETION_REFUSED: dict[str, tuple[tuple[Any, ...], str]] = {
    "best_of": ((1,), "no server-side best-of ranking; use n"),
    "suffix": (("",), "no fill-in-the-middle"),
}


def _refuse(table: dict[str, tuple[tuple[Any, ...], str]]) -> Any:
    """A field validator that refuses the fields of ``table`` per :func:`refuse_unless`."""

    def check(cls: Any, value: Any, info: Any) -> Any:
        no_ops, why = table[info.field_name]
        return refuse_unless(info.field_name, value, no_ops, why)

    return field_validator(*table)(classmethod(check))


# --- chat -------------------------------------------------------------------------------------


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImageURL(_Strict):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]
_NAME = r"^[a-zA-Z0-9_-]{1,64}$"  # OpenAI's rule for function and schema names


class FunctionCall(_Strict):
    name: str
    arguments: str  # JSON text, as OpenAI sends and expects it


class ToolCall(_Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionDef(_Strict):
    name: str = Field(pattern=_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None  # JSON Schema of the arguments; absent: no arguments
    strict: bool | None = None


class ToolDef(_Strict):
    type: Literal["function"]
    function: FunctionDef


class FunctionName(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: FunctionName


class JsonSchemaFormat(_Strict):
    model_config = ConfigDict(strict=True, populate_by_name=True)

    name: str = Field(pattern=_NAME)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("'json_schema' is required with type 'json_schema' and only with it")
        return self


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    refusal: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: Any = None
    audio: Any = None

    _refused = _refuse(MESSAGE_REFUSED)

    def text(self) -> str:
        """The message's text, with text parts joined; image parts are left to vision engines."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    def has_images(self) -> bool:
        return isinstance(self.content, list) and any(isinstance(p, ImagePart) for p in self.content)


class StreamOptions(_Strict):
    include_usage: bool = False


class _SamplingFields(_Request):
    model: str | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    logit_bias: dict[str, float] | None = None
    # Sampling extensions that vLLM users send (not in OpenAI's spec); 0 / -1 / 1.0 switch them off.
    top_k: int | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=10.0)

    @field_validator("logit_bias")
    @classmethod
    def _check_logit_bias(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        """OpenAI's shape: token ids as strings, biases from -100 to 100 (the vocabulary is the engine's)."""
        for key, bias in (v or {}).items():
            if not key.isdigit():
                raise ValueError(f"keys must be token ids as strings, got {key!r}")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"biases must be between -100 and 100, got {bias} for token {key}")
        return v

    def logit_biases(self) -> dict[int, float]:
        return {int(k): b for k, b in (self.logit_bias or {}).items()}

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        items = [v] if isinstance(v, str) else (v or [])
        if len(items) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        if any(s == "" for s in items):
            raise ValueError("stop sequences must not be empty")
        return v

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    # Honoured by the gateway's usage log (metadata, safety_identifier, like user) or a hint with no
    # effect to miss (prompt_cache_key).
    metadata: dict[str, str] | None = Field(default=None, max_length=MAX_METADATA_KEYS)
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    parallel_tool_calls: bool | None = None
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    functions: Any = None
    function_call: Any = None
    response_format: ResponseFormat | None = None
    audio: Any = None
    modalities: Any = None
    prediction: Any = None
    web_search_options: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None
    store: Any = None
    service_tier: Any = None

    _refused = _refuse(CHAT_REFUSED)

    @model_validator(mode="after")
    def _check_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        return self

    def tool_mode(self) -> str:
        """``none``, ``auto``, ``required`` or ``named``; OpenAI's default is auto when tools are sent."""
        if not self.tools or self.tool_choice == "none":
            return "none"
        if isinstance(self.tool_choice, NamedToolChoice):
            return "named"
        return self.tool_choice or "auto"

    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def has_images(self) -> bool:
        return any(m.has_images() for m in self.messages)


# --- completions ------------------------------------------------------------------------------


class CompletionRequest(_SamplingFields):
    prompt: str | list[str] = Field(min_length=1)
    max_tokens: int | None = Field(default=16, ge=1)
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=5)
    best_of: Any = None
    suffix: Any = None

    _refused = _refuse(COMPLETION_REFUSED)

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


# --- embeddings -------------------------------------------------------------------------------


TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class EmbeddingRequest(_Request):
    model: str | None = None
    # Text, texts, one token-id array or several (what the ids mean is the worker's setting).
    input: str | list[str] | TokenIds | list[TokenIds] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _check_token_arrays(cls, v: Any) -> Any:
        """One clear message for malformed token-id input (the union's own errors list every member)."""
        if isinstance(v, list) and v and not all(isinstance(x, str) for x in v):
            for row in v if isinstance(v[0], list) else [v]:
                if not isinstance(row, list) or not row or not all(type(i) is int and i >= 0 for i in row):
                    raise ValueError("token-id input must be a non-empty list of token ids (integers >= 0) "
                                     "or a list of such lists")
        return v

    def inputs(self) -> list[str]:
        """The texts, for text input (token ids: :meth:`token_inputs`)."""
        if isinstance(self.input, str):
            return [self.input]
        return [t for t in self.input if isinstance(t, str)]

    def token_inputs(self) -> list[list[int]] | None:
        """The token-id arrays, or None for text input."""
        if isinstance(self.input, str) or not self.input or isinstance(self.input[0], str):
            return None
        if isinstance(self.input[0], int):
            return [list(self.input)]  # type: ignore[arg-type]
        return [list(ids) for ids in self.input]  # type: ignore[union-attr]


# --- rerank (Cohere / Jina shape, as vLLM, TEI and Xinference serve it) ----------------------------


class RerankDocument(BaseModel):
    """A document given as an object: its ``text`` is what is ranked (other keys are the caller's)."""

    model_config = ConfigDict(extra="allow", strict=True)
    text: str


RERANK_REFUSED: dict[str, tuple[tuple[Any, ...], str]] = {
    "rank_fields": ((["text"],), "documents are ranked by their 'text'"),
    "max_chunks_per_doc": ((), "documents are not chunked"),
    "max_tokens_per_doc": ((), "documents are truncated at the model's length"),
}


class RerankRequest(_Request):
    model: str | None = None
    query: str = Field(min_length=1)
    documents: list[str | RerankDocument] = Field(min_length=1)
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool = True
    user: str | None = None
    rank_fields: Any = None
    max_chunks_per_doc: Any = None
    max_tokens_per_doc: Any = None

    _refused = _refuse(RERANK_REFUSED)

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


def sse(payload: BaseModel | dict[str, Any]) -> bytes:
    """One server-sent event carrying a JSON payload."""
    body = payload.model_dump_json() if isinstance(payload, BaseModel) else _dumps(payload)
    return f"data: {body}\n\n".encode()


SSE_DONE = b"data: [DONE]\n\n"


def _dumps(obj: dict[str, Any]) -> str:
    import json

    return json.dumps(obj, separators=(",", ":"))


# --- OpenAPI documents ------------------------------------------------------------------------
# The gateway passes bodies through without parsing them, so FastAPI cannot see what they hold; these
# give its routes a documented request body all the same (clients' generators, schemathesis).

AUDIO_RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with every ``$ref`` replaced by its definition: self-contained, so it
    can sit inside any OpenAPI operation whatever the document's components hold."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, list):
            return [resolve(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            return resolve(copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]]))
        # A discriminator's mapping names $refs; the inlined oneOf's `const` types say the same.
        return {key: resolve(value) for key, value in node.items() if key != "discriminator"}

    return resolve(schema)


def openapi_json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route whose JSON body is ``model``."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline_schema(model)}}}}


def openapi_audio_body(task: Literal["transcribe", "translate"]) -> dict[str, Any]:
    """``openapi_extra`` for ``/v1/audio/transcriptions`` or ``/translations``: OpenAI's multipart form."""
    properties: dict[str, Any] = {
        "file": {"type": "string", "format": "binary", "description": "The audio file (wav, mp3, flac, ...)."},
        "model": {"type": "string"},
        "prompt": {"type": "string"},
        "response_format": {"type": "string", "enum": list(AUDIO_RESPONSE_FORMATS), "default": "json"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1, "default": 0},
    }
    if task == "transcribe":
        properties["language"] = {"type": "string", "description": "ISO-639-1 code of the spoken language."}
        properties["timestamp_granularities[]"] = {
            "type": "array", "items": {"type": "string", "enum": ["segment", "word"]},
            "description": "Needs response_format verbose_json."}
    schema = {"type": "object", "required": ["file"], "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}
