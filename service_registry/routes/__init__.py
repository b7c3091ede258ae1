"""HTTP routes of the service registry: registration (workers write) and views (everyone reads)."""

from service_registry.routes import registration, views

ROUTERS = (registration.router, views.router)
