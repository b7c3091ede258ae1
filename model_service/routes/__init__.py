"""HTTP routes of the worker contract, one module per endpoint family."""

from model_service.routes import audio, chat, completions, embeddings, info, rerank

# Open: readiness for the registry, load balancers and container health checks.
OPEN_ROUTERS = (info.health_router,)
# Behind the service token when auth is on: the gateway, the registry's GPU probe and Prometheus call these.
SERVICE_ROUTERS = (info.router, chat.router, completions.router, embeddings.router, audio.router,
                  rerank.router)
ROUTERS = OPEN_ROUTERS + SERVICE_ROUTERS
