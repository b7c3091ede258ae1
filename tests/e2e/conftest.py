"""A real stack for end-to-end tests: ``python -m stack up`` as a separate process on free ports."""

from __future__ import annotations

import pytest

from tests.helpers.stack import start_stack


@pytest.fixture(scope="package")
def real_stack(tmp_path_factory, smollm_path, minilm_path):
    """Gateway + SmolLM2 chat worker + MiniLM embedding worker, real models, real processes."""
    running = start_stack(tmp_path_factory.mktemp("stack"))
    yield running
    running.stop()
