"""Model worker: one model per process, one GPU per container, behind the worker contract."""
