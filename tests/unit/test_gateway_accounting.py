"""Usage read off the bytes (streamed in any chunking, or one JSON body) and the per-key buckets."""

from __future__ import annotations

import json

import pytest

from common.auth import Principal, Role
from gateway.accounting import StreamTap, TokenCount, usage_in
from gateway.limits import Limiter, RateLimitError, check_request_caps, duration

ROLE = b'data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}\n\n'
WORD = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":" fox"}}],"usage":null}\n\n'
END = b'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}\n\n'
USAGE = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}\n\n'
DONE = b"data: [DONE]\n\n"
ASKED = ROLE + WORD + WORD + END + USAGE + DONE
PLAIN = (ROLE + WORD + WORD + END).replace(b',"usage":null}', b"}") + DONE


def run(tap: StreamTap, stream: bytes, cuts: list[int]) -> bytes:
    out, start = [], 0
    for cut in [*cuts, len(stream)]:
        out.append(tap.feed(stream[start:cut]))
        start = cut
    out.append(tap.close())
    return b"".join(out)


@pytest.mark.parametrize("cut", range(0, len(ASKED), 7))
def test_stripping_gives_the_plain_stream_however_it_is_cut(cut: int) -> None:
    tap = StreamTap(strip_usage=True)
    assert run(tap, ASKED, [cut, min(len(ASKED), cut + 3)]) == PLAIN
    assert tap.usage == TokenCount(7, 2, 9) and tap.first_content_at is not None and tap.content_events >= 2


@pytest.mark.parametrize("strip", [True, False])
def test_whole_chunks_of_events_after_the_first_content(strip: bool) -> None:
    tap = StreamTap(strip_usage=strip)
    first = len(ROLE + WORD)
    cuts = [first, first + len(WORD + END)]  # the middle chunk takes the quick path, the last one not
    assert run(tap, ASKED, cuts) == (PLAIN if strip else ASKED)
    assert tap.usage == TokenCount(7, 2, 9)


def test_without_stripping_the_bytes_pass_unchanged_and_usage_is_still_read() -> None:
    tap = StreamTap(strip_usage=False, keep_text=True)
    assert run(tap, ASKED, [5, 100, 101]) == ASKED
    assert tap.usage == TokenCount(7, 2, 9) and "".join(tap.text) == " fox fox"


def test_a_stream_cut_mid_event_passes_the_rest_as_it_came() -> None:
    tap = StreamTap(strip_usage=True)
    assert run(tap, ROLE + WORD[:20], []) == ROLE.replace(b',"usage":null}', b"}") + WORD[:20]
    assert tap.usage is None


def test_usage_of_a_json_body_is_found_without_parsing_the_rest() -> None:
    body = {"object": "list", "data": [{"embedding": [0.1] * 5000}], "usage": {"prompt_tokens": 3, "total_tokens": 3}}
    assert usage_in(json.dumps(body).encode()) == TokenCount(3, None, 3)
    tricky = {"choices": [{"message": {"content": 'say "usage": {"prompt_tokens": 99}'}}],
              "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}
    assert usage_in(json.dumps(tricky).encode()) == TokenCount(1, 2, 3)
    assert usage_in(json.dumps({"choices": [{"text": '"usage": {"prompt_tokens": 5}'}]}).encode()) is None
    assert usage_in(b"not json") is None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_request_bucket_refills_at_the_per_minute_rate() -> None:
    clock, key = Clock(), Principal("k", Role.USER, rpm=2)
    limiter = Limiter(clock)
    assert limiter.admit(key).headers["x-ratelimit-remaining-requests"] == "1"
    assert limiter.admit(key).headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(RateLimitError) as refused:
        limiter.admit(key)
    assert refused.value.headers["Retry-After"] == "30" and refused.value.status == 429
    clock.now = 30.0
    limiter.admit(key)


def test_token_bucket_is_charged_after_the_answer_and_may_overdraw() -> None:
    clock, key = Clock(), Principal("k", Role.USER, tpm=60)
    limiter = Limiter(clock)
    limiter.admit(key).charge(90)  # one answer larger than the whole budget still finishes
    with pytest.raises(RateLimitError) as refused:
        limiter.admit(key)
    assert refused.value.headers["x-ratelimit-remaining-tokens"] == "0"
    assert refused.value.headers["Retry-After"] == "31"  # 30 tokens owed, then one, at one a second
    clock.now = 31.0
    limiter.admit(key)
    assert limiter.admit(Principal("free", Role.USER)).headers == {}


def test_duration_format_and_caps() -> None:
    assert [duration(s) for s in (0.0199, 1, 59.5, 360)] == ["20ms", "1s", "59.5s", "6m0s"]
    check_request_caps({"max_tokens": 10, "input": ["a"] * 9}, generates=True, embeds=False, max_tokens=10,
                       max_inputs=2)
    with pytest.raises(Exception, match="max_tokens"):
        check_request_caps({"max_tokens": 11}, generates=True, embeds=False, max_tokens=10, max_inputs=None)
    with pytest.raises(Exception, match="3 inputs"):
        check_request_caps({"input": ["a", "b", "c"]}, generates=False, embeds=True, max_tokens=None, max_inputs=2)
    check_request_caps({"input": [1, 2, 3]}, generates=False, embeds=True, max_tokens=None, max_inputs=2)
