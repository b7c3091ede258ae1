"""Model registry (:8090): mirrors models into object storage with revisions and checksums.

Entry points: ``model_registry.app:create_app`` (the service), ``model_registry.fetch.fetch_from_store``
(what a worker calls at start-up: it reads the store directly, the server need not run) and
``model_registry.cli.add_models_commands`` (the CLI group).
"""
