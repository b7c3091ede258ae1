"""``GET /v1/models/{id}`` on a worker and on the gateway: the same card as the list, ids with ``/``
in them, OpenAI's 404 for an unknown id, and a key's model scope (a model it may not use is a 404)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import openai
import pytest

from tests.helpers.auth import ADMIN, auth_on, authed_worker, bearer, create_key, keyed_gateway

pytestmark = pytest.mark.asyncio

CHAT, EMB = "org/chat-model", "org/sub/embedder"


def assert_not_found(resp: httpx.Response) -> None:
    assert resp.status_code == 404, resp.text
    assert resp.json()["error"] | {"message": ""} == {"message": "", "type": "invalid_request_error",
                                                      "param": "model", "code": "model_not_found"}


async def test_a_model_card_by_id_on_workers_and_the_gateway(tmp_path: Path) -> None:
    async with AsyncExitStack() as es:
        chat = await es.enter_async_context(authed_worker(CHAT, auth=auth_on()))
        emb = await es.enter_async_context(authed_worker(EMB, "embedding", auth=auth_on()))
        url, _, _ = await es.enter_async_context(keyed_gateway(tmp_path, [chat, emb], auth=auth_on()))
        client = await es.enter_async_context(httpx.AsyncClient(timeout=15, trust_env=False, headers=ADMIN))
        listed = {card["id"]: card for card in (await client.get(f"{url}/v1/models")).json()["data"]}
        assert set(listed) == {CHAT, EMB}
        for model_id, base in ((CHAT, chat), (EMB, emb)):
            through = await client.get(f"{url}/v1/models/{model_id}")
            assert through.status_code == 200, through.text
            assert through.json() | {"created": 0} == listed[model_id] | {"created": 0}
            direct = await client.get(f"{base}/v1/models/{model_id}")
            worker_card = (await client.get(f"{base}/v1/models")).json()["data"][0]
            assert direct.status_code == 200 and direct.json() | {"created": 0} == worker_card | {"created": 0}
            assert_not_found(await client.get(f"{base}/v1/models/{model_id}-other"))
        for unknown in ("nope", "org/nope", "org/chat-model/extra"):
            assert_not_found(await client.get(f"{url}/v1/models/{unknown}"))

        only_chat = await create_key(url, name="chat-only", models=[CHAT])
        scoped = bearer(only_chat["key"])
        assert (await client.get(f"{url}/v1/models/{CHAT}", headers=scoped)).json()["id"] == CHAT
        assert_not_found(await client.get(f"{url}/v1/models/{EMB}", headers=scoped))
        assert (await client.get(f"{url}/v1/models/{CHAT}", headers={"authorization": ""})).status_code == 401

        sdk = await es.enter_async_context(openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=only_chat["key"],
                                                              max_retries=0))
        assert (await sdk.models.retrieve(CHAT)).id == CHAT
        with pytest.raises(openai.NotFoundError):
            await sdk.models.retrieve(EMB)
