"""Streaming one stored file to a client (``curl``, a script, a machine without store credentials),
with its sha256 header. Workers do not come here: they read the store directly
(``model_registry.fetch.fetch_from_store``).

Supports a single ``Range: bytes=a-b`` so an interrupted transfer can continue. The store is read
in a worker thread (Starlette iterates a sync iterator in its thread pool).
"""

from __future__ import annotations

import asyncio
import re

from fastapi.responses import StreamingResponse

from common.errors import APIError, NotFoundError
from model_registry.catalog import Catalog, file_key
from model_registry.ids import validate_file_path

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiableError(APIError):
    status, type, code = 416, "invalid_request_error", "range_not_satisfiable"


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end_inclusive)`` for one satisfiable range; None for no (or an ignorable) Range header."""
    match = _RANGE.match(header.strip()) if header else None
    if not match or (not match[1] and not match[2]):
        return None
    if not match[1]:  # suffix range: the last N bytes
        start, end = max(size - int(match[2]), 0), size - 1
    else:
        start, end = int(match[1]), min(int(match[2]) if match[2] else size - 1, size - 1)
    if start >= size or start > end:
        raise RangeNotSatisfiableError(f"Range {header} is outside the file's {size} bytes.",
                                       headers={"Content-Range": f"bytes */{size}"})
    return start, end


async def stream_file(catalog: Catalog, model_id: str, ref: str, path: str, range_header: str | None,
                      ) -> StreamingResponse:
    validate_file_path(path)
    revision = await asyncio.to_thread(catalog.resolve, model_id, ref)
    manifest = await asyncio.to_thread(catalog.manifest, model_id, revision)
    entry = next((f for f in manifest.files if f.path == path), None)
    if entry is None:
        raise NotFoundError(f"Revision '{revision}' of '{model_id}' has no file '{path}'.", param="path")
    span = parse_range(range_header, entry.size)
    start, end = span or (0, entry.size - 1)
    length = end - start + 1 if entry.size else 0
    key = file_key(model_id, revision, path)
    try:
        chunks = await asyncio.to_thread(catalog.store.iter_chunks, key, start, length)
    except KeyError:
        raise NotFoundError(f"The stored object for '{path}' is missing.", param="path") from None
    headers = {"Content-Length": str(length), "X-Sha256": entry.sha256, "ETag": f'"{entry.sha256}"',
               "X-Model-Revision": revision, "Accept-Ranges": "bytes"}
    if span:
        headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
    return StreamingResponse(chunks, status_code=206 if span else 200, headers=headers,
                             media_type="application/octet-stream")
