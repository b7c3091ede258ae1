"""The registry's records as stored (JSON in the store) and as answered by the API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from common.records import ModelType

JobState = Literal["queued", "running", "done", "failed"]
JobKind = Literal["download", "import", "bundle", "onnx-export", "gguf-export"]
ACTIVE_STATES: frozenset[str] = frozenset({"queued", "running"})


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FileEntry(BaseModel):
    path: str
    size: int
    sha256: str


class Manifest(BaseModel):
    """Everything a worker needs to fetch and verify one revision. ``complete`` is written last."""

    model_id: str
    revision: str
    model_type: ModelType | None = None
    source: dict[str, Any] = Field(default_factory=dict)
    created_at: str = Field(default_factory=utc_now)
    files: list[FileEntry] = Field(default_factory=list)
    total_size: int = 0
    complete: bool = False


class RevisionSummary(BaseModel):
    revision: str
    created_at: str
    size: int
    files: int
    source: str


class ModelRecord(BaseModel):
    """``<id>/model.json``: the model's type, its complete revisions and its aliases."""

    id: str
    type: ModelType | None = None
    aliases: dict[str, str] = Field(default_factory=dict)
    revisions: list[RevisionSummary] = Field(default_factory=list)
    updated_at: str = Field(default_factory=utc_now)

    def revision(self, name: str) -> RevisionSummary | None:
        return next((r for r in self.revisions if r.revision == name), None)

    def view(self) -> dict[str, Any]:
        """The API shape: adds the current revision, its size and a status."""
        current = self.aliases.get("current")
        summary = self.revision(current) if current else None
        return {**self.model_dump(), "current": current, "size": summary.size if summary else 0,
                "status": "ready" if summary else "empty"}


class JobRecord(BaseModel):
    """``_jobs/<id>.json``: enough to report progress and to resume after a restart (never a secret)."""

    id: str
    kind: JobKind
    model_id: str
    revision: str | None = None  # what was asked for (a branch, tag or sha; None: the source's default)
    resolved_revision: str | None = None
    model_type: ModelType | None = None
    state: JobState = "queued"
    bytes_done: int = 0
    bytes_total: int = 0
    files_done: int = 0
    files_total: int = 0
    error: str | None = None
    resumed: int = 0
    params: dict[str, Any] = Field(default_factory=dict)
    created_at: str = Field(default_factory=utc_now)
    updated_at: str = Field(default_factory=utc_now)
