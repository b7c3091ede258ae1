"""Request bodies of the registry API (unknown fields are refused so typos do not pass silently)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from common.records import ModelType


class DownloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    revision: str | None = Field(default=None, description="branch, tag or commit sha (default: main)")
    model_type: ModelType | None = None
    allow_patterns: list[str] | None = None
    ignore_patterns: list[str] | None = None


class ImportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="absolute path of a folder on the registry host")
    model_type: ModelType | None = None
    revision: str | None = Field(default=None, description="revision name (default: a fingerprint of the folder)")


class AliasRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    revision: str
