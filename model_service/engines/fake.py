"""A deterministic fake engine so the whole HTTP stack is testable without a model.

Tokens are whitespace-led words. The "model" answers with the words of the last prompt line (the
user's last message for chat), in order at temperature 0 and shuffled by a seeded RNG otherwise,
then ends with end-of-sequence. It honours max_tokens, seeds, logprobs and cancellation, and can be
slowed down per token or made to load slowly or fail, so tests can watch those paths. Of the sampling
knobs, the ones with a visible effect on such a "model" show it: ``top_k=1`` (or ``min_p=1``) keeps the
words in order like temperature 0, and a ``logit_bias`` of -100 bans that token's word.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import re
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

from model_service.engines.base import (
    ChatPrompt,
    Delta,
    Embedder,
    Embeddings,
    EngineInfo,
    Reranker,
    SampledToken,
    SamplingParams,
    Scores,
    TextGenerator,
    Transcriber,
)
from model_service.settings import WorkerSettings

_PIECE = re.compile(r"\s*\S+|\s+$")
_VOCAB = 1_000_010  # token ids are crc32(piece) % 1_000_000 + 10


class FakeEngine(TextGenerator, Embedder, Reranker, Transcriber):
    name = "fake"
    structured_outputs = True  # over a byte vocabulary (``fake_grammar``)

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.vocab: dict[int, str] = {}
        # Counters tests read to check that cancelled requests really stopped.
        self.started = 0
        self.finished = 0
        self.cancelled = 0
        self.active = 0

    def load(self) -> None:
        time.sleep(self.settings.fake_load_delay_s)
        if self.settings.fake_load_error:
            raise RuntimeError(self.settings.fake_load_error)

    def info(self) -> EngineInfo:
        is_embed = self.settings.model_type == "embedding"
        return EngineInfo(
            engine=self.name, device="cpu", dtype="float32",
            max_model_len=self.settings.max_model_len or self.settings.fake_max_model_len,
            embedding_dims=self.settings.fake_embedding_dims if is_embed else None, vocab_size=_VOCAB,
            matryoshka_dims=() if is_embed else None,  # the fake "model" may be cut to any size
        )

    # --- tokens -------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        ids = []
        for piece in _PIECE.findall(text):
            token = zlib.crc32(piece.encode()) % (_VOCAB - 10) + 10
            self.vocab[token] = piece
            ids.append(token)
        return ids

    def decode(self, token_ids: list[int]) -> str:
        return "".join(self.vocab.get(t, "") for t in token_ids)

    def chat_prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """A template that takes tools (one line naming them first), so ``auto`` is testable; the
        fake then answers in words, never with a call."""
        text = "".join(f"<|{m['role']}|>\n{m.get('content') or ''}\n" for m in messages)
        names = " ".join(t["function"]["name"] for t in tools or [])
        return self.tokenize((f"<|tools|> {names}\n" if names else "") + text + "<|assistant|>\n")

    def template_takes_tools(self) -> bool:
        return True

    def chat_inputs(self, messages: list[dict[str, Any]], images: list[Any]) -> ChatPrompt:
        """A multimodal fake "sees" each image as ``[image WxH]`` in its message, so tests can tell
        the images arrived, decoded and in order; other model types refuse images like real ones."""
        if self.settings.model_type != "multimodal":
            return super().chat_inputs(messages, images)
        sizes = iter(images)

        def flat(content: Any) -> str:
            if not isinstance(content, list):
                return content or ""
            return " ".join(p["text"] if p["type"] == "text" else "[image {}x{}]".format(*next(sizes).size)
                            for p in content)

        return ChatPrompt(self.chat_prompt([{**m, "content": flat(m.get("content"))} for m in messages]))

    def text_prompt(self, text: str) -> list[int]:
        return self.tokenize(text)

    def _answer(self, prompt_ids: list[int], params: SamplingParams) -> list[str]:
        prompt = self.decode(prompt_ids)
        lines = [ln for ln in prompt.splitlines() if ln.strip() and not ln.startswith("<|")]
        words = (lines[-1] if lines else "ok").split()
        banned = {t for t, bias in params.logit_bias.items() if bias <= -100}
        words = [w for w in words if self.tokenize(f" {w}")[0] not in banned] or ["ok"]
        if params.temperature > 0 and params.top_k != 1 and params.min_p < 1.0:
            random.Random(params.seed).shuffle(words)
        glued = not prompt or prompt[-1].isspace()  # the first word needs no space after a newline
        return [w if i == 0 and glued else f" {w}" for i, w in enumerate(words)]

    # --- generation ---------------------------------------------------------------------------
    async def generate(self, prompt_ids: list[int], params: SamplingParams,
                       media: Any = None) -> AsyncIterator[Delta]:
        if params.grammar is None:
            answer = self._answer(prompt_ids, params)
        else:  # imported here: the grammar library comes with the worker extra, the fake needs no torch
            from model_service.engines.fake_grammar import constrained_answer

            answer = constrained_answer(params.grammar, params.max_tokens)
        self.started += 1
        self.active += 1
        done = False
        try:
            for step in range(params.max_tokens):
                if self.settings.fake_token_delay_s:
                    await asyncio.sleep(self.settings.fake_token_delay_s)
                if step >= len(answer):
                    done = True
                    yield Delta(text="", token_ids=[0], finish_reason="stop")
                    return
                piece = answer[step]
                token = self.tokenize(piece)[0]
                finish = "length" if step + 1 == params.max_tokens else None
                done = finish is not None
                yield Delta(text=piece, token_ids=[token], finish_reason=finish,
                            logprobs=self._logprobs(piece, params))
        finally:
            self.active -= 1
            if done:
                self.finished += 1
            else:
                self.cancelled += 1

    @staticmethod
    def _logprobs(piece: str, params: SamplingParams) -> list[SampledToken]:
        if not params.logprobs:
            return []
        top = [(piece, -0.25), (" fake", -1.75), (" other", -2.5)][: params.top_logprobs]
        return [SampledToken(piece, -0.25, top)]

    # --- embeddings ---------------------------------------------------------------------------
    async def embed(self, texts: list[str]) -> Embeddings:
        if self.settings.fake_token_delay_s:
            await asyncio.sleep(self.settings.fake_token_delay_s)
        vectors = [self._vector(t) for t in texts]
        return Embeddings(vectors=vectors, prompt_tokens=sum(len(self.tokenize(t)) for t in texts))

    def decode_tokens(self, token_ids: list[int]) -> str:
        return self.decode(token_ids)

    def _vector(self, text: str) -> list[float]:
        rng = random.Random(hashlib.sha256(text.encode()).digest())
        vec = [rng.gauss(0.0, 1.0) for _ in range(self.settings.fake_embedding_dims)]
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]

    # --- rerank -------------------------------------------------------------------------------
    async def rerank(self, query: str, documents: list[str]) -> Scores:
        """Relevance = the share of the query's words the document holds (case-blind), so the obvious
        document wins, as a real cross-encoder would pick it."""
        if self.settings.fake_token_delay_s:
            await asyncio.sleep(self.settings.fake_token_delay_s)
        wanted = set(query.lower().split())
        scores = [len(wanted & set(d.lower().split())) / (len(wanted) or 1) for d in documents]
        return Scores(scores, prompt_tokens=sum(len(self.tokenize(query + " " + d)) for d in documents))

    # --- speech -------------------------------------------------------------------------------
    def transcribe(self, audio: Any, params: Any) -> Any:
        from model_service.engines.speech import fake_transcription

        time.sleep(self.settings.fake_token_delay_s)  # blocking on purpose: callers run it in a thread
        return fake_transcription(len(audio), params)
