"""Hugging Face chat models on vLLM's own OpenAI server, supervised by the worker.

vLLM runs from its own virtualenv (``make vllm-venv``), started on the verified model folder with the
engine arguments of the worker's settings (``vllm_args``). As for llama.cpp, the worker keeps the
prompts (the folder's tokenizer and chat template), so stop strings, ``n`` choices, the context cap
and usage are counted exactly as for the transformers engine; each sequence is one streamed
``POST /v1/completions`` whose prompt is the token ids, with ``return_token_ids`` so usage counts
vLLM's own tokens. Closing the iterator closes that HTTP stream, and vLLM aborts the request (its
server watches for the disconnect), freeing the sequence's KV cache at once.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from common.errors import InvalidRequestError
from model_service.engine_paths import find_vllm_python
from model_service.engine_server import EngineServer
from model_service.engines.base import Delta, EngineInfo, SampledToken, SamplingParams
from model_service.engines.supervised import ServerGenerator, stream_lines
from model_service.settings import WorkerSettings
from model_service.vllm_args import VllmOptions, vllm_argv, vllm_env


class VllmEngine(ServerGenerator):
    """A Hugging Face folder served by a supervised vLLM server, one sequence per admitted request."""

    name = "vllm"
    label = "vLLM"
    structured_outputs = True  # the JSON Schema goes to vLLM's own ``structured_outputs``

    def __init__(self, settings: WorkerSettings) -> None:
        if not settings.model_path or not (Path(settings.model_path) / "config.json").is_file():
            raise ValueError("the vllm engine needs MODEL_PATH: a Hugging Face model folder (with config.json)")
        self.settings, self.folder = settings, Path(settings.model_path)
        self.max_model_len: int | None = None
        self.vocab_size: int | None = None
        self.dtype: str | None = None
        self.options: VllmOptions | None = None
        self._python: Path | None = None

    def load(self) -> None:
        """The blocking half (in the load thread): the venv must exist, then the tokenizer and the
        model's facts; the child is started by ``serve()``."""
        from transformers import AutoConfig, AutoTokenizer

        from model_service.engines.model_facts import context_length

        gpu = bool(self.settings.gpu_indices)
        python = find_vllm_python("cuda" if gpu else "cpu")
        if python is None:
            flavour = "VLLM_FLAVOUR=cuda " if gpu else ""
            raise RuntimeError(f"vLLM is not installed on this machine; install it once with `{flavour}make vllm-venv` "
                               "(scripts/vllm-venv.sh)")
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        config = AutoConfig.from_pretrained(self.folder)
        self.max_model_len = self.settings.max_model_len or context_length(config, self.tokenizer)
        self.vocab_size = getattr(config, "vocab_size", None) or len(self.tokenizer)
        self.dtype = self._dtype()
        self.options = vllm_options(self.settings, self.dtype, self.max_model_len)
        self._python = python
        self.server = EngineServer("vllm", self.argv, env=child_env(self.settings, self.options),
                                   start_timeout_s=self.settings.engine_start_timeout_s)

    def _dtype(self) -> str:
        """``auto`` on a CPU is what the transformers engine would pick on this CPU (fp32 where bf16
        is slower), so the two engines compare like for like; on GPUs vLLM's own ``auto`` decides."""
        if self.settings.dtype != "auto" or self.settings.gpu_indices:
            return self.settings.dtype
        from model_service.engines.hardware import dtype_name, resolve_dtype

        return dtype_name(resolve_dtype("auto", "cpu"))

    def argv(self, port: int) -> list[str]:
        assert self._python is not None and self.options is not None, "load() first"
        return vllm_argv(self._python, self.folder, served_name=self.settings.model_name, port=port,
                         options=self.options)

    def info(self) -> EngineInfo:
        return EngineInfo(engine=self.name, device="cuda" if self.settings.gpu_indices else "cpu",
                          dtype=self.dtype, max_model_len=self.max_model_len, vocab_size=self.vocab_size)

    async def generate(self, prompt_ids: list[int], params: SamplingParams, media: Any = None) -> AsyncIterator[Delta]:
        if self.server is None:
            raise RuntimeError("the model is not loaded")
        body = completion_body(self.settings.model_name, prompt_ids, params)
        lines = stream_lines(self.server.client, "/v1/completions", body, upstream_error)
        async with contextlib.aclosing(lines):
            async for line in lines:
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                delta = to_delta(json.loads(line[6:]))
                if delta is not None:
                    yield delta
                    if delta.finish_reason is not None:
                        return
        # A stream that ends without its last choice was cut (the child died): an error, not a short answer.
        raise RuntimeError("vLLM ended the stream before the sequence finished")


def vllm_options(settings: WorkerSettings, dtype: str, max_model_len: int) -> VllmOptions:
    """The engine arguments from the worker's settings: one vLLM sequence slot per admitted request."""
    return VllmOptions(
        dtype=dtype, max_model_len=max_model_len, gpus=tuple(settings.gpu_indices),
        gpu_memory_utilization=settings.vllm_gpu_memory_utilization, prefix_caching=settings.vllm_prefix_caching,
        max_num_seqs=settings.engine_concurrency(), enforce_eager=settings.vllm_enforce_eager,
        tool_call_parser=settings.vllm_tool_call_parser, reasoning_parser=settings.vllm_reasoning_parser,
        structured_outputs_backend=settings.vllm_structured_outputs_backend,
        extra_args=tuple(settings.vllm_extra_args))


def child_env(settings: WorkerSettings, options: VllmOptions) -> dict[str, str]:
    """The vLLM child's extra environment: on a CPU its OpenMP threads are the worker's
    (``settings.model_threads``: ``vllm_cpu_threads``, else ``torch_threads``), else every core."""
    return vllm_env(options, cache_root=settings.cache_dir / "vllm",
                    cpu_threads=settings.model_threads(settings.vllm_cpu_threads) or os.cpu_count() or 1,
                    kv_cache_gib=settings.vllm_kv_cache_gib)


def completion_body(model: str, prompt_ids: list[int], params: SamplingParams) -> dict[str, Any]:
    """The ``/v1/completions`` request for one sequence. Every sampling value is sent, so the
    model's ``generation_config.json`` defaults (which vLLM applies to what a request leaves out)
    never change what the request asked for. Special tokens are kept out of the text, as the
    transformers engine does; stop strings are the worker's, so none is sent."""
    body: dict[str, Any] = {
        "model": model, "prompt": prompt_ids, "stream": True, "return_token_ids": True,
        "max_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p,
        "top_k": params.top_k or -1, "min_p": params.min_p, "repetition_penalty": params.repetition_penalty,
        "presence_penalty": params.presence_penalty, "frequency_penalty": params.frequency_penalty,
        "skip_special_tokens": True,
    }
    if params.logit_bias:
        body["logit_bias"] = {str(token): bias for token, bias in params.logit_bias.items()}
    if params.seed is not None:
        body["seed"] = params.seed
    if params.logprobs:
        body["logprobs"] = params.top_logprobs
    if params.json_schema is not None:  # vLLM constrains the sequence itself (its structured-outputs backend)
        body["structured_outputs"] = {"json": params.json_schema}
    return body


def to_delta(event: dict[str, Any]) -> Delta | None:
    """One streamed completion chunk as a ``Delta`` (None for one with nothing in it, such as a usage
    chunk); an error event (vLLM reports a failure mid-stream this way) raises."""
    if "error" in event:
        raise RuntimeError(f"vLLM: {event['error']}")
    if not event.get("choices"):
        return None
    choice = event["choices"][0]
    tokens, text, finish = list(choice.get("token_ids") or []), choice.get("text") or "", choice.get("finish_reason")
    if not tokens and not text and finish is None:
        return None
    return Delta(text=text, token_ids=tokens, finish_reason=finish, logprobs=_logprobs(choice.get("logprobs")))


def _logprobs(block: dict[str, Any] | None) -> list[SampledToken]:
    """vLLM's completions logprobs (parallel lists) as one ``SampledToken`` per token; its top list
    also holds the sampled token, as OpenAI's chat ``top_logprobs`` does."""
    if not block:
        return []
    tops = block.get("top_logprobs") or []
    return [SampledToken(token=token, logprob=float(logprob if logprob is not None else float("-inf")),
                         top=sorted(((t, float(lp)) for t, lp in (tops[i] or {}).items()),
                                    key=lambda pair: -pair[1]) if i < len(tops) else [])
            for i, (token, logprob) in enumerate(zip(block.get("tokens") or [], block.get("token_logprobs") or [],
                                                     strict=False))]


def upstream_error(status: int, body: bytes) -> Exception:
    """vLLM's refusal in our error shape: its 400s (a prompt or value it cannot take) stay 400s with
    its message; anything else is the engine failing (500)."""
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body.decode(errors="replace")[:500]
    if status == 400:
        return InvalidRequestError(f"vLLM refused the request: {message}")
    return RuntimeError(f"vLLM answered {status}: {message}")
