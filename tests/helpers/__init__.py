"""Helpers shared by the test modules, one small module per topic (no tests are collected here).

Test modules import helpers only from this package; fixtures live in the ``conftest.py`` files.

- ``ports``: free loopback ports.
- ``polling``: ``eventually`` (async) and ``eventually_sync``: wait for a condition, name it on failure.
- ``http``: SSE parsing, OpenAI error-shape assertions, raw ASGI disconnects, shared request constants.
- ``servers``: apps under uvicorn on loopback (``serve``), the gateway, the service registry.
- ``stub_worker``: a deliberately broken upstream on raw asyncio streams.
- ``workers``: fake-engine and real-engine worker apps, in-process or on loopback.
- ``auth``: a gateway with auth on, its keys, and ``/metrics`` scraping.
- ``processes``: services as real OS processes (``python -m stack ...``).
- ``stack``: the whole stack (``python -m stack up``) as one process.
- ``fake_openai_upstream``: an external OpenAI-compatible server, run as its own process.
- ``s3``: a real S3 server (SeaweedFS).
- ``model_registry``: model registry settings, in-process client, jobs, store environment.
- ``vision``, ``whisper``, ``audio``: tiny models built once per session, images and sounds to send.
- ``deploy_files``: the compose files and the Grafana dashboard as tests read them.
"""
