"""Running the stack: the ``model-service`` CLI, the embedded local stack, starter models."""
