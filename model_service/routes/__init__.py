"""HTTP routes of the worker contract, one module per endpoint family."""

from model_service.routes import audio, chat, completions, embeddings, info

ROUTERS = (info.router, chat.router, completions.router, embeddings.router, audio.router)
