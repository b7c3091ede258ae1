"""Just enough multipart/form-data for the proxy: read the small text fields, set ``model``.

Audio uploads cannot be JSON-parsed, yet routing needs their ``model``. The body (already bounded
by the body limit) is split on its boundary; only parts without a filename are decoded, and the
bytes are forwarded unchanged unless the model name must be filled in or renamed, in which case the
parts are re-joined with the same boundary and only the ``model`` part differs.
"""

from __future__ import annotations

import re

from common.errors import InvalidRequestError, UnsupportedMediaTypeError

_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_NAME = re.compile(rb'\bname="([^"]*)"', re.IGNORECASE)
_FILENAME = re.compile(rb'\bfilename\*?=', re.IGNORECASE)


class FormPayload(dict):
    """The text fields of a multipart body (what ``parse_body`` is for JSON), plus its boundary."""

    def __init__(self, fields: dict[str, str], boundary: bytes) -> None:
        super().__init__(fields)
        self.boundary = boundary

    def body_with_model(self, raw: bytes, model: str) -> bytes:
        parts = [(h, b) for h, b in split_parts(raw, self.boundary) if _field_name(h) != "model"]
        parts.append((b'Content-Disposition: form-data; name="model"', model.encode()))
        delim = b"--" + self.boundary
        joined = b"".join(delim + b"\r\n" + head + b"\r\n\r\n" + body + b"\r\n" for head, body in parts)
        return joined + delim + b"--\r\n"


def parse_form(raw: bytes, content_type: str) -> FormPayload:
    """The form's text fields (first value of each name): 415 for another content type, as the worker
    answers, and 400 for a multipart type without its boundary."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise UnsupportedMediaTypeError(
            f"This endpoint takes a multipart/form-data body with the audio 'file', not "
            f"'{content_type.split(';')[0].strip() or 'no Content-Type'}'.")
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise InvalidRequestError("The multipart/form-data Content-Type has no boundary.", code="invalid_multipart")
    boundary = (match.group(1) or match.group(2)).encode("latin-1")
    fields: dict[str, str] = {}
    for head, body in split_parts(raw, boundary):
        name = _field_name(head)
        if name is not None and not _FILENAME.search(head) and name not in fields:
            fields[name] = body.decode("utf-8", errors="replace")
    return FormPayload(fields, boundary)


def split_parts(raw: bytes, boundary: bytes) -> list[tuple[bytes, bytes]]:
    """(headers, body) of each part; the preamble and epilogue are dropped."""
    pieces = raw.split(b"--" + boundary)
    parts = []
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            break
        piece = piece.removeprefix(b"\r\n").removesuffix(b"\r\n")
        head, sep, body = piece.partition(b"\r\n\r\n")
        if sep:
            parts.append((head, body))
    return parts


def _field_name(head: bytes) -> str | None:
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-disposition:") and (m := _NAME.search(line)):
            return m.group(1).decode("utf-8", errors="replace")
    return None
