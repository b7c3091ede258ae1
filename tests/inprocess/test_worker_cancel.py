"""A client that goes away stops its generation and frees its engine slot.

httpx's ASGITransport buffers whole responses, so these tests speak raw ASGI: the fake client
disconnects after a few streamed chunks (or while a non-streaming answer is being made).
"""

from __future__ import annotations

from model_service.app import create_app
from model_service.settings import WorkerSettings
from tests.helpers.http import LONG_CHAT_BODY, call_and_disconnect
from tests.helpers.polling import eventually


async def test_stream_disconnect_stops_generation_and_frees_slot():
    app = create_app(WorkerSettings(_env_file=None, engine="fake", model_name="m", fake_token_delay_s=0.02))
    async with app.router.lifespan_context(app):
        worker = app.state.worker
        await eventually(lambda: worker.engine is not None, "the engine to load", within_s=2.0)
        sent = await call_and_disconnect(app, {**LONG_CHAT_BODY, "stream": True}, disconnect_after_chunks=3)
        assert sent[0]["status"] == 200
        engine = worker.engine
        await eventually(lambda: engine.cancelled == 1 and engine.active == 0, "the generation to be cancelled",
                         within_s=2.0)
        assert engine.finished == 0
        assert worker.admission.running == 0
        streamed = sum(1 for m in sent if m.get("body"))
        assert streamed < 10  # far from the 200 tokens it was asked for


async def test_non_stream_disconnect_stops_generation():
    app = create_app(WorkerSettings(_env_file=None, engine="fake", model_name="m", fake_token_delay_s=0.02))
    async with app.router.lifespan_context(app):
        worker = app.state.worker
        await eventually(lambda: worker.engine is not None, "the engine to load", within_s=2.0)
        await call_and_disconnect(app, LONG_CHAT_BODY, disconnect_after_chunks=None, disconnect_after_s=0.2)
        engine = worker.engine
        await eventually(lambda: engine.cancelled == 1 and engine.active == 0, "the generation to be cancelled",
                         within_s=2.0)
        assert worker.admission.running == 0
