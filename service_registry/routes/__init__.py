"""HTTP routes of the service registry: registration (workers write), views (services read) and
``/health``, the one route that stays open when auth is on."""

from service_registry.routes import registration, views

# Open: liveness for health checks and load balancers.
OPEN_ROUTERS = (views.health_router,)
# Behind the service token (admin passes too): workers register, the gateway and Prometheus read.
SERVICE_ROUTERS = (registration.router, views.router)
