"""Registry-specific typed errors; their status codes come from the one table in ``common.errors``."""

from __future__ import annotations

from common.errors import APIError, InvalidRequestError, NotFoundError, ServiceUnavailableError


class ChecksumError(APIError):
    """A file's bytes do not match the sha256 its manifest (or its source) promised.

    Raised by imports (the revision is then never marked complete) and by ``fetch_model`` at worker
    start-up, so a corrupted store is a loud error that names the file, never a silent load.
    """

    status, type, code = 500, "server_error", "checksum_mismatch"

    def __init__(self, path: str, expected: str, actual: str, *, where: str = "") -> None:
        where = f" ({where})" if where else ""
        super().__init__(f"Checksum mismatch for file '{path}'{where}: expected sha256 {expected}, got {actual}.")
        self.path = path
        self.expected = expected
        self.actual = actual


class ModelTypeError(InvalidRequestError):
    """A revision is stored as another model type than the one a worker serves."""

    code = "model_type_mismatch"


class FetchError(RuntimeError):
    """A worker could not get a verified copy of its model from the store (``fetch_from_store``).

    Carries where the store is and what stopped the fetch (the typed error itself is chained as
    ``__cause__``), so the worker can say what failed and where in one message."""

    def __init__(self, where: str, cause: Exception) -> None:
        self.where = where
        self.detail = f"{type(cause).__name__}: {getattr(cause, 'message', None) or cause}"
        super().__init__(f"{self.detail} ({where})")


class RevisionNotFoundError(NotFoundError):
    code = "revision_not_found"


class JobNotFoundError(NotFoundError):
    code = "job_not_found"


class StorageError(ServiceUnavailableError):
    """The object store cannot be reached or refuses our credentials (message never holds a secret)."""

    code = "storage_unavailable"


class SourceError(APIError):
    """A model source (Hugging Face, a folder, a bundle) failed in a way the operator must fix."""

    status, type, code = 502, "server_error", "source_error"


class GgufConversionError(InvalidRequestError):
    """llama.cpp's converter refused a stored model (most often an architecture it does not know).

    A 400: the model cannot be converted as stored, and running again will not change that. The
    message carries the converter's last lines, which name the reason."""

    code = "gguf_conversion_failed"

    def __init__(self, model: str, returncode: int | None, log_tail: str) -> None:
        super().__init__(f"llama.cpp's converter could not convert '{model}' to GGUF (exit status {returncode}); "
                         f"its last lines:\n{log_tail}", param="model_id")
