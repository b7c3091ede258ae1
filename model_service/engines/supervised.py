"""What every engine that relays to a supervised child server shares (llama.cpp, vLLM), written once.

The worker keeps the prompts (the model's own tokenizer and chat template), so stop strings, ``n``,
the context cap and usage are counted the same way whichever engine runs; the child only gets token
ids and streams tokens back. The child's lifetime is the ``EngineServer``'s: started by ``serve()``
on the worker's loop, reported by ``unavailable()`` while it is down, stopped by ``aclose()``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx

from model_service.engine_server import EngineServer, EngineState
from model_service.engines.base import TextGenerator
from model_service.engines.transformers_base import chat_prompt_ids, template_takes_tools


class ServerGenerator(TextGenerator):
    """A ``TextGenerator`` whose sequences run in ``self.server``; ``load()`` sets the tokenizer and
    the server (not started: ``serve()`` starts it on the event loop)."""

    tokenizer: Any = None
    server: EngineServer | None = None
    label = "engine server"  # how /health names the child while it is down ("llama-server", "vLLM")

    async def serve(self) -> None:
        """The async half, on the worker's loop: start the child and wait until it answers."""
        assert self.server is not None, "load() first"
        await self.server.start()

    async def aclose(self) -> None:
        if self.server is not None:
            await self.server.stop()

    def unavailable(self) -> str | None:
        status = self.server.status if self.server is not None else None
        if status is None or status.state is EngineState.READY:
            return None
        why = f"{self.label} {status.state.value} (restarts {status.restarts}, last exit {status.last_exit_code})"
        return why + (f": {status.detail}" if status.detail else "")

    def close(self) -> None:
        self.tokenizer = None

    def chat_prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
        return chat_prompt_ids(self.tokenizer, messages, tools)

    def template_takes_tools(self) -> bool:
        """Tools work as for transformers: our template renders them and our parser reads the answer;
        constrained answers reach the child as the JSON Schema they must satisfy."""
        return template_takes_tools(self.tokenizer)

    def text_prompt(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])


def gpu_env(gpu_indices: list[int]) -> dict[str, str]:
    """The child sees exactly the worker's GPUs (its device 0..n-1 are these)."""
    return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, gpu_indices))} if gpu_indices else {}


async def stream_lines(client: httpx.AsyncClient, path: str, body: dict[str, Any],
                       refused: Callable[[int, bytes], Exception]) -> AsyncIterator[str]:
    """POST ``body`` to the child and yield its streamed lines; a non-200 answer raises
    ``refused(status, body)``. However the caller stops (the sequence done, a stop string, the client
    gone), the upstream response is closed, shielded from the cancellation a client's disconnect
    brings: a close that is itself cancelled would leave the connection open, and the child would go
    on generating into the socket's buffer."""
    response = await client.send(client.build_request("POST", path, json=body), stream=True)
    try:
        if response.status_code != 200:
            raise refused(response.status_code, await response.aread())
        async for line in response.aiter_lines():
            yield line
    finally:
        with anyio.CancelScope(shield=True):
            await response.aclose()
