"""GGUF models on llama.cpp's own ``llama-server``, supervised by the worker.

The worker keeps the prompts: the model's tokenizer and chat template, converted by transformers
from the GGUF itself, so stop strings, ``n`` choices, the context cap and usage are counted exactly as
for the transformers engine. The child only gets token ids on its native ``/completion`` endpoint
(the OpenAI-compatible one would template and tokenize again) and streams token ids back; closing
the iterator closes that HTTP stream, and llama-server frees the slot.

Converting the tokenizer from a GGUF takes seconds, so the converted one is saved in the worker's
cache, keyed by the file's name, size and mtime, and later starts load it in well under a second.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from common.gguf_meta import file_type_name
from model_service.engine_paths import find_llama_server
from model_service.engine_server import EngineServer
from model_service.engines.base import Delta, EngineInfo, SampledToken, SamplingParams
from model_service.engines.supervised import ServerGenerator, gpu_env, stream_lines
from model_service.llamacpp_args import llama_server_argv
from model_service.settings import WorkerSettings

log = logging.getLogger(__name__)
# llama-server's stop_type -> OpenAI finish_reason ("word" never happens: stop strings are ours).
FINISH = {"eos": "stop", "word": "stop", "limit": "length"}


def gguf_file(path: str | Path) -> Path | None:
    """The GGUF that ``path`` names: the file itself, or the one ``.gguf`` in a folder; None if
    ``path`` is neither (a Hugging Face folder, say). A folder with several is ambiguous: ValueError."""
    path = Path(path)
    if path.is_file():
        return path if path.suffix == ".gguf" else None
    found = sorted(path.glob("*.gguf")) if path.is_dir() else []
    if len(found) > 1:
        raise ValueError(f"{path} holds {len(found)} .gguf files; MODEL_PATH must name one")
    return found[0] if found else None


def _read_gguf_facts(gguf: Path) -> dict[str, Any]:
    """The trained context length and quantization (file type) from the GGUF's metadata."""
    from gguf import GGUFReader

    fields = GGUFReader(gguf).fields
    arch = fields["general.architecture"].contents()
    facts: dict[str, Any] = {"architecture": arch, "quantization": file_type_name(fields)}
    if (ctx := fields.get(f"{arch}.context_length")) is not None:
        facts["context_length"] = int(ctx.contents())
    return facts


def load_gguf_tokenizer(gguf: Path, cache_dir: Path) -> tuple[Any, dict[str, Any]]:
    """The tokenizer converted from ``gguf`` and its metadata facts, from the cache when this exact
    file (name, size, mtime) was converted before; a new conversion is written to a temporary folder
    and renamed into place, so a crash never leaves a half-written cache entry behind."""
    from transformers import AutoTokenizer

    stat = gguf.stat()
    entry = cache_dir / "gguf-tokenizers" / f"{gguf.stem}-{stat.st_size}-{stat.st_mtime_ns}"
    if (entry / "gguf.json").is_file():
        facts = json.loads((entry / "gguf.json").read_text())
        if "quantization" not in facts:  # an entry cached before the file type was read: read it now
            facts = _read_gguf_facts(gguf)
        return AutoTokenizer.from_pretrained(entry), facts
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    facts = _read_gguf_facts(gguf)
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=".tmp-"))
    try:
        tokenizer.save_pretrained(tmp)
        (tmp / "gguf.json").write_text(json.dumps(facts))
        os.replace(tmp, entry)
    except OSError:  # another worker renamed its copy first, or the cache is read-only: use ours
        log.warning("could not cache the tokenizer of %s in %s", gguf, entry, exc_info=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return tokenizer, facts


class LlamaCppEngine(ServerGenerator):
    """A GGUF served by a supervised ``llama-server`` with ``max_batch_size`` parallel slots."""

    name = "llamacpp"
    structured_outputs = True  # the JSON Schema goes to llama-server's native ``json_schema``
    label = "llama-server"

    def __init__(self, settings: WorkerSettings) -> None:
        gguf = gguf_file(settings.model_path) if settings.model_path else None
        if gguf is None:
            raise ValueError("the llamacpp engine needs MODEL_PATH: a .gguf file or a folder holding one")
        self.settings, self.gguf = settings, gguf
        self.tokenizer: Any = None
        self.max_model_len: int | None = None
        self.vocab_size: int | None = None
        self.quantization: str | None = None  # the GGUF's file type (Q4_1, Q8_0, BF16...): /health's dtype
        self.server: EngineServer | None = None
        self._binary: Path | None = None

    def load(self) -> None:
        """The blocking half (in the load thread): the binary must exist, then the tokenizer."""
        binary = find_llama_server("cuda" if self.settings.gpu_indices else "cpu")
        if binary is None:
            raise RuntimeError("llama-server is not built on this machine; build it once with "
                               "`make llama-server` (scripts/build-llama-server.sh)")
        self.tokenizer, facts = load_gguf_tokenizer(self.gguf, self.settings.cache_dir)
        self.vocab_size = len(self.tokenizer)
        self.max_model_len = self.settings.max_model_len or facts.get("context_length") or 2048
        self.quantization = facts.get("quantization")
        self._binary = binary
        self.server = EngineServer("llama.cpp", self.argv, env=gpu_env(self.settings.gpu_indices),
                                   start_timeout_s=self.settings.engine_start_timeout_s)

    def argv(self, port: int) -> list[str]:
        """The child's command line: ``max_model_len`` per slot, one slot per admitted request."""
        assert self._binary is not None and self.max_model_len is not None, "load() first"
        gpu = bool(self.settings.gpu_indices)
        return llama_server_argv(
            self._binary, self.gguf, served_name=self.settings.model_name, port=port,
            context_length=self.max_model_len,
            parallel=self.settings.llamacpp_parallel or self.settings.engine_concurrency(),
            threads=self.settings.model_threads(self.settings.llamacpp_threads) or os.cpu_count(),
            gpu_layers="all" if gpu else None,
            extra_args=self.settings.llamacpp_extra_args)

    def info(self) -> EngineInfo:
        return EngineInfo(engine=self.name, device="cuda" if self.settings.gpu_indices else "cpu",
                          dtype=self.quantization, max_model_len=self.max_model_len,
                          vocab_size=self.vocab_size)

    async def generate(self, prompt_ids: list[int], params: SamplingParams, media: Any = None) -> AsyncIterator[Delta]:
        if self.server is None:
            raise RuntimeError("the model is not loaded")
        body = completion_body(prompt_ids, params)
        lines = stream_lines(self.server.client, "/completion", body, _refused)
        async with contextlib.aclosing(lines):
            async for line in lines:
                if line.startswith("data: "):
                    delta = to_delta(json.loads(line[6:]))
                    if delta is not None:
                        yield delta
                    if delta is not None and delta.finish_reason is not None:
                        return
        # A stream that ends without its last event was cut (the child died): an error, not a short answer.
        raise RuntimeError("llama-server ended the stream before the sequence finished")


def completion_body(prompt_ids: list[int], params: SamplingParams) -> dict[str, Any]:
    """The ``/completion`` request for one sequence. llama.cpp's own sampling defaults (top-k 40,
    min-p 0.05, repeat penalty 1.1 over the last 64 tokens) are replaced by the request's values, so
    the OpenAI parameters (and the vLLM extensions the worker accepts) mean what they say: the
    repetition penalty covers the whole sequence, prompt included, as vLLM's does (``repeat_last_n``
    spans it; this server refuses -1, the CLI's "whole context")."""
    body: dict[str, Any] = {
        "prompt": prompt_ids, "stream": True, "return_tokens": True, "n_predict": params.max_tokens,
        "temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k, "min_p": params.min_p,
        "repeat_penalty": params.repetition_penalty, "repeat_last_n": len(prompt_ids) + params.max_tokens,
        "presence_penalty": params.presence_penalty, "frequency_penalty": params.frequency_penalty,
        "cache_prompt": True,
    }
    if params.logit_bias:
        body["logit_bias"] = [[token, bias] for token, bias in params.logit_bias.items()]
    if params.seed is not None:
        body["seed"] = params.seed
    if params.logprobs:
        body["n_probs"] = max(params.top_logprobs, 1)
    if params.json_schema is not None:  # llama-server turns it into its own grammar
        body["json_schema"] = params.json_schema
    return body


def to_delta(event: dict[str, Any]) -> Delta | None:
    """One streamed ``/completion`` event as a ``Delta`` (None for one with nothing in it); an error
    event (llama-server reports a failure mid-stream this way) raises."""
    if "error" in event:
        raise RuntimeError(f"llama-server: {event['error']}")
    finish = FINISH.get(event.get("stop_type", ""), "stop") if event.get("stop") else None
    tokens = list(event.get("tokens") or [])
    text = event.get("content") or ""
    if not tokens and not text and finish is None:
        return None
    logprobs = [SampledToken(token=p.get("token", ""), logprob=float(p.get("logprob", 0.0)),
                             top=[(t.get("token", ""), float(t.get("logprob", 0.0)))
                                  for t in p.get("top_logprobs", [])])
                for p in event.get("completion_probabilities") or []]
    return Delta(text=text, token_ids=tokens, finish_reason=finish, logprobs=logprobs)


def _refused(status: int, body: bytes) -> Exception:
    return RuntimeError(f"llama-server answered {status}: {body.decode(errors='replace')[:500]}")
