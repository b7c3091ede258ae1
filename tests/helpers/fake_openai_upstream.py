"""A tiny external OpenAI-compatible server for the cluster tests.

Run as its own process: ``uvicorn --factory tests.helpers.fake_openai_upstream:create_app``, with
``FAKE_UPSTREAM_KEY`` (the bearer key it demands) and ``FAKE_UPSTREAM_MODEL`` (the only model name it
knows, i.e. the upstream side of the gateway's model-name mapping). Answers never contain the key.
"""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def create_app() -> FastAPI:
    key = os.environ["FAKE_UPSTREAM_KEY"]
    model = os.environ.get("FAKE_UPSTREAM_MODEL", "upstream-chat")
    app = FastAPI()
    seen = {"authorized": 0, "refused": 0}

    def refused() -> JSONResponse:
        seen["refused"] += 1
        error = {"message": "Incorrect API key provided.", "type": "invalid_request_error", "param": None,
                 "code": "invalid_api_key"}
        return JSONResponse({"error": error}, status_code=401)

    def authorized(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {key}"

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        if not authorized(request):
            return refused()
        return {"object": "list", "data": [{"id": model, "object": "model", "created": 0, "owned_by": "ext"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        if not authorized(request):
            return refused()
        body = await request.json()
        if body.get("model") != model:
            error = {"message": f"The model '{body.get('model')}' does not exist", "type": "invalid_request_error",
                     "param": "model", "code": "model_not_found"}
            return JSONResponse({"error": error}, status_code=404)
        seen["authorized"] += 1
        message = {"role": "assistant", "content": "hello from the external upstream"}
        return {"id": "chatcmpl-ext", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 5, "total_tokens": 6}}

    @app.get("/stats")
    async def stats() -> dict[str, int]:
        return dict(seen)

    return app
