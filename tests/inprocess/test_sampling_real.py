"""The sampling knobs beyond OpenAI's basics, on the real starter chat model: ``logit_bias`` (OpenAI)
and ``top_k``, ``min_p``, ``repetition_penalty`` (what vLLM users send), each with its effect seen."""

from __future__ import annotations

from typing import Any

import pytest

from model_service.settings import WorkerSettings
from tests.helpers.workers import worker_client_for

QUESTION = {"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 12}
LLM = WorkerSettings(_env_file=None, engine="transformers", model_name="smollm2", model_type="llm",
                     model_path="unused")


async def answer(client: Any, **fields: Any) -> str:
    resp = await client.post("/v1/chat/completions", json={**QUESTION, **fields})
    assert resp.status_code == 200, resp.text
    return resp.json()["choices"][0]["message"]["content"]


@pytest.mark.asyncio
async def test_sampling_knobs_change_what_the_model_says(worker_llm_engine: Any) -> None:
    tokenizer = worker_llm_engine.tokenizer
    async with worker_client_for(LLM, worker_llm_engine) as client:
        greedy = await answer(client, temperature=0)
        assert "Paris" in greedy
        # Keeping the one likeliest token makes sampling greedy, whatever the seed.
        for knob in ({"top_k": 1}, {"min_p": 1.0}):
            assert {await answer(client, temperature=1.0, seed=s, **knob) for s in range(3)} == {greedy}
        assert {await answer(client, temperature=1.5, seed=s) for s in range(3)} != {greedy}  # the control
        first = tokenizer.encode(greedy, add_special_tokens=False)[0]
        banned = await answer(client, temperature=0, logit_bias={str(first): -100})
        assert banned and not banned.startswith(tokenizer.decode([first]))
        forced = tokenizer.encode(" Paris", add_special_tokens=False)[-1]
        assert await answer(client, temperature=0, max_tokens=3, logit_bias={str(forced): 100}) == \
            tokenizer.decode([forced] * 3)
        long = {**QUESTION, "max_tokens": 48, "messages": [{"role": "user", "content": "Write a poem about Paris."}]}
        plain = await client.post("/v1/chat/completions", json={**long, "temperature": 0})
        penalised = await client.post("/v1/chat/completions", json={**long, "temperature": 0,
                                                                      "repetition_penalty": 1.8})
        assert plain.json()["choices"][0]["message"]["content"] != penalised.json()["choices"][0]["message"]["content"]
        vocab = worker_llm_engine.info().vocab_size
        resp = await client.post("/v1/chat/completions", json={**QUESTION, "logit_bias": {str(vocab): 5}})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "logit_bias"
