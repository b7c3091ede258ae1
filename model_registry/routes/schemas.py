"""Request bodies of the registry API (unknown fields are refused so typos do not pass silently)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from common.records import ModelType
from model_registry.sources.gguf_export import OutType


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


class OnnxExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    revision: str | None = Field(default=None, description="revision or alias to export (default: current)")
    quantize: Literal["int8"] | None = Field(default=None, description="int8: dynamic int8 quantisation")
    make_current: bool = Field(default=False, description="point 'current' at the export once stored")


class GgufExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    revision: str | None = Field(default=None, description="revision or alias to convert (default: current)")
    outtype: OutType = Field(
        default="q8_0", description="q8_0 (default) or bf16 for llama.cpp on CPUs; f16, f32 unquantised")
    make_current: bool = Field(default=False, description="point 'current' at the export once stored")


class AliasRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    revision: str
