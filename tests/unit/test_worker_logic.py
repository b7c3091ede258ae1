"""Pure worker logic: stop strings, detokenisation, penalties, vectors, settings, admission."""

from __future__ import annotations

import asyncio
import base64
import struct

import pytest
import torch

from common.errors import InvalidRequestError, OverloadedError
from common.protocol import ChatCompletionRequest, CompletionRequest
from model_service.admission import Admission
from model_service.engines import hardware
from model_service.engines.base import SamplingParams
from model_service.engines.detok import IncrementalDecoder
from model_service.engines.hardware import resolve_device, resolve_dtype
from model_service.engines.sampling import OpenAIPenaltiesProcessor, build_processors, choose, make_generator
from model_service.generation import sampling_params
from model_service.settings import WorkerSettings
from model_service.stops import StopMatcher
from model_service.vectors import from_base64, shorten, to_base64

# --- stop strings -----------------------------------------------------------------------------


def feed_all(matcher: StopMatcher, pieces: list[str]) -> tuple[list[str], bool]:
    out = [matcher.feed(p) for p in pieces]
    if not matcher.stopped:
        out.append(matcher.flush())
    return out, matcher.stopped


def test_stop_split_across_pieces_is_held_back_and_dropped():
    out, stopped = feed_all(StopMatcher(["\nUser:"]), ["Hello", "\n", "Us", "er:", " more"])
    assert stopped and "".join(out) == "Hello"
    assert out[:2] == ["Hello", ""]  # the newline waited: it could start the stop string


def test_false_alarm_is_released():
    out, stopped = feed_all(StopMatcher(["END"]), ["a E", "N", "x", " b"])
    assert not stopped and "".join(out) == "a ENx b"
    assert out[0] == "a " and out[1] == ""


def test_held_text_is_flushed_at_the_end():
    out, stopped = feed_all(StopMatcher(["END"]), ["ok EN"])
    assert not stopped and out == ["ok ", "EN"]


def test_earliest_of_several_stops_wins():
    m = StopMatcher(["world", "lo w"])
    assert m.feed("hello world") == "hel" and m.stopped
    assert m.feed("more") == "" and m.flush() == ""


def test_no_stops_passes_through():
    assert StopMatcher([]).feed("anything") == "anything"


# --- detokenisation ---------------------------------------------------------------------------


def test_incremental_decoder_waits_for_complete_characters():
    table = {1: b"caf", 2: b"\xc3", 3: b"\xa9", 4: b" ok"}

    def decode(ids: list[int]) -> str:
        return b"".join(table[i] for i in ids).decode("utf-8", errors="replace")

    dec = IncrementalDecoder(decode)
    assert [dec.push(i) for i in (1, 2, 3, 4)] == ["caf", "", "\u00e9", " ok"]
    assert dec.flush() == ""


def test_incremental_decoder_flushes_pending_bytes():
    dec = IncrementalDecoder(lambda ids: bytes(ids).decode("utf-8", errors="replace"))
    assert dec.push(0xC3) == ""
    assert dec.flush() == "\ufffd"


# --- penalties and sampling -------------------------------------------------------------------


def test_penalties_follow_openai_additive_definition():
    proc = OpenAIPenaltiesProcessor(prompt_len=2, presence=0.5, frequency=1.0)
    ids = torch.tensor([[3, 3, 1, 1, 2]])  # prompt [3, 3]; completion: token 1 twice, token 2 once
    out = proc(ids, torch.zeros(1, 5))
    assert out.tolist() == [[0.0, -2.5, -1.5, 0.0, 0.0]]  # prompt tokens are not penalised


def test_penalties_may_be_negative_and_are_noop_without_completion():
    proc = OpenAIPenaltiesProcessor(prompt_len=1, presence=-1.0, frequency=0.0)
    assert proc(torch.tensor([[0]]), torch.zeros(1, 3)).tolist() == [[0.0, 0.0, 0.0]]
    assert proc(torch.tensor([[0, 2]]), torch.zeros(1, 3)).tolist() == [[0.0, 0.0, 1.0]]


def test_processors_are_built_only_when_needed():
    assert len(build_processors(SamplingParams(max_tokens=1, temperature=0), 3)) == 0
    full = SamplingParams(max_tokens=1, temperature=0.7, top_p=0.9, presence_penalty=0.1)
    assert len(build_processors(full, 3)) == 3


def test_greedy_and_seeded_choice():
    scores = torch.tensor([0.1, 2.0, 0.3, 1.9])
    assert choose(scores, SamplingParams(max_tokens=1, temperature=0), None) == 1
    params = SamplingParams(max_tokens=1, temperature=1.0, seed=5)
    draws = [choose(scores, params, make_generator(5, "cpu")) for _ in range(3)]
    assert len(set(draws)) == 1


# --- request -> sampling params -------------------------------------------------------------


def chat(**kw) -> ChatCompletionRequest:
    return ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}], **kw)


def test_token_budget_is_capped_by_context():
    p = sampling_params(chat(max_tokens=500), prompt_len=90, max_model_len=100, default_max_tokens=64)
    assert p.max_tokens == 10
    p = sampling_params(chat(), prompt_len=10, max_model_len=100, default_max_tokens=64)
    assert p.max_tokens == 64
    p = sampling_params(chat(max_tokens=5, max_completion_tokens=7), prompt_len=1, max_model_len=None,
                        default_max_tokens=64)
    assert p.max_tokens == 7


def test_prompt_longer_than_context_is_a_400():
    with pytest.raises(InvalidRequestError) as info:
        sampling_params(CompletionRequest(prompt="x"), prompt_len=100, max_model_len=100, default_max_tokens=8,
                        prompt_param="prompt")
    assert info.value.code == "context_length_exceeded" and info.value.param == "prompt"


def test_defaults_and_per_choice_seeds():
    p = sampling_params(chat(seed=10, logprobs=True, top_logprobs=3), prompt_len=1, max_model_len=None,
                        default_max_tokens=8, choice=2)
    assert (p.temperature, p.top_p, p.seed, p.logprobs, p.top_logprobs) == (1.0, 1.0, 12, True, 3)
    q = sampling_params(CompletionRequest(prompt="x", logprobs=0), prompt_len=1, max_model_len=None,
                        default_max_tokens=8)
    assert q.logprobs and q.top_logprobs == 0 and q.max_tokens == 16


# --- embeddings vectors ------------------------------------------------------------------------


def test_base64_is_little_endian_float32():
    vec = [1.0, -0.5, 0.25]
    encoded = to_base64(vec)
    assert base64.b64decode(encoded) == struct.pack("<3f", *vec)
    assert from_base64(encoded) == vec


def test_shorten_renormalises_and_refuses_growing():
    assert shorten([3.0, 4.0, 12.0], 2, 3) == pytest.approx([0.6, 0.8])
    assert shorten([1.0, 0.0], None, 2) == [1.0, 0.0]
    with pytest.raises(InvalidRequestError) as info:
        shorten([1.0], 2, 1)
    assert info.value.param == "dimensions"


# --- settings and hardware --------------------------------------------------------------------


def test_settings_read_documented_and_prefixed_names(monkeypatch):
    monkeypatch.setenv("MODEL_NAME", "qwen")
    monkeypatch.setenv("MODEL_TYPE", "embedding")
    monkeypatch.setenv("MODEL_PATH", "/models/q")
    monkeypatch.setenv("WORKER_MAX_QUEUE", "3")
    s = WorkerSettings(_env_file=None)
    got = (s.model_name, s.model_type, s.model_path, s.max_queue, s.port)
    assert got == ("qwen", "embedding", "/models/q", 3, 8000)
    monkeypatch.setenv("WORKER_MODEL_NAME", "prefixed")
    assert WorkerSettings(_env_file=None).model_name == "prefixed"
    assert WorkerSettings(_env_file=None, model_name="kw").model_name == "kw"


def test_settings_reject_unknown_model_type(monkeypatch):
    monkeypatch.setenv("MODEL_TYPE", "tts")
    with pytest.raises(ValueError, match="Input should be 'llm', 'embedding'"):
        WorkerSettings(_env_file=None)


def test_device_and_dtype_resolution(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cuda:1") == "cuda:1"

    def cpu(avx512_bf16: bool, amx: bool, speedup: float | None = None) -> torch.dtype:
        """What auto picks on a CPU with these flags, the probe (if it runs) measuring ``speedup``."""
        hardware.cpu_auto_dtype.cache_clear()
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
        probes: list[float] = []

        def probe() -> float:
            assert speedup is not None, "the probe ran where the flags decide alone"
            probes.append(speedup)
            return speedup

        monkeypatch.setattr(hardware, "probe_bf16_speedup", probe)
        first, again = resolve_dtype("auto", "cpu"), resolve_dtype("auto", "cpu")
        assert first == again and len(probes) <= 1  # measured once per process
        hardware.cpu_auto_dtype.cache_clear()
        return first

    assert cpu(avx512_bf16=False, amx=False) == torch.float32  # bf16 would be emulated
    assert cpu(avx512_bf16=True, amx=True) == torch.bfloat16  # AMX tiles
    # AVX-512 BF16 alone: measured. Slower or about as fast stays float32; clearly faster is bf16.
    assert cpu(avx512_bf16=True, amx=False, speedup=0.8) == torch.float32
    assert cpu(avx512_bf16=True, amx=False, speedup=1.1) == torch.float32
    assert cpu(avx512_bf16=True, amx=False, speedup=2.0) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("auto", "cuda") == torch.float16
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int3", "cpu")


def test_the_bf16_probe_measures_a_ratio_on_a_thread_of_its_own(monkeypatch):
    import threading

    callers = []
    linear = torch.nn.functional.linear

    def traced(*args, **kwargs):
        callers.append(threading.current_thread())
        return linear(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "linear", traced)
    speedup = hardware.probe_bf16_speedup()
    assert 0 < speedup < float("inf")
    # no OpenMP team is left on the caller's thread (it slows the engine thread's generation)
    assert callers and threading.current_thread() not in callers
    assert not any(thread.is_alive() for thread in callers)


def test_a_failing_bf16_probe_raises_in_the_caller(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no bf16 kernels")

    monkeypatch.setattr(torch.nn.functional, "linear", broken)
    with pytest.raises(RuntimeError, match="no bf16 kernels"):
        hardware.probe_bf16_speedup()


# --- admission ---------------------------------------------------------------------------------


async def test_admission_queues_then_refuses():
    adm = Admission(max_concurrency=1, max_queue=1, retry_after_s=2)
    release = asyncio.Event()

    async def hold() -> None:
        async with adm.slot():
            await release.wait()

    first = asyncio.create_task(hold())
    await asyncio.sleep(0)
    second = asyncio.create_task(hold())
    await asyncio.sleep(0)
    assert (adm.running, adm.waiting) == (1, 1)
    with pytest.raises(OverloadedError) as info:
        async with adm.slot():
            pass
    assert info.value.headers["Retry-After"] == "2"
    release.set()
    await asyncio.gather(first, second)
    assert (adm.running, adm.waiting) == (0, 0)
