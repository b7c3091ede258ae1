"""Strict validation of model ids, revisions, aliases and file paths.

Every one of these ends up inside an object key or a local path, so anything that could escape the
model's own prefix (``..``, absolute paths, backslashes, control characters) is refused with a 400
before it touches the store. Components that the key layout itself uses (``revisions``, ``aliases``)
and names starting with ``_`` or ``.`` (registry-internal prefixes such as ``_jobs/``) are reserved.
"""

from __future__ import annotations

import re

from common.errors import InvalidRequestError

MAX_ID_LENGTH = 200
MAX_PATH_LENGTH = 1000
RESERVED_COMPONENTS = frozenset({"revisions", "aliases", "model.json"})

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def validate_model_id(model_id: str) -> str:
    """``org/name`` or ``name``: letters, digits, ``.``, ``_``, ``-``; no ``..``; at most 200 chars."""
    if not isinstance(model_id, str) or not model_id:
        raise InvalidRequestError("A model id is required.", param="model_id", code="invalid_model_id")
    if len(model_id) > MAX_ID_LENGTH:
        raise InvalidRequestError(f"Model id is longer than {MAX_ID_LENGTH} characters.", param="model_id",
                                  code="invalid_model_id")
    parts = model_id.split("/")
    bad = len(parts) > 2 or any(not _NAME.match(p) or ".." in p or p in RESERVED_COMPONENTS for p in parts)
    if bad:
        raise InvalidRequestError(
            f"Invalid model id {_shown(model_id)}: use 'org/name' or 'name' with letters, digits, '.', '_' "
            "and '-' (no '..', no leading '.', '_' or '-', not 'revisions' or 'aliases').",
            param="model_id", code="invalid_model_id")
    return model_id


def validate_revision(revision: str, *, what: str = "revision") -> str:
    """A commit sha, tag, branch-like or alias name: ``[A-Za-z0-9][A-Za-z0-9._-]{0,63}``, no ``..``."""
    if not isinstance(revision, str) or not _REVISION.match(revision) or ".." in revision:
        raise InvalidRequestError(
            f"Invalid {what} {_shown(revision)}: use up to 64 letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit, no '..').", param=what, code=f"invalid_{what}")
    return revision


def validate_alias(alias: str) -> str:
    return validate_revision(alias, what="alias")


def validate_file_path(path: str) -> str:
    """A relative POSIX path inside a repo: no absolute path, backslash, ``.``/``..`` or empty part."""
    problem = None
    if not isinstance(path, str) or not path:
        problem = "is empty"
    elif len(path) > MAX_PATH_LENGTH:
        problem = f"is longer than {MAX_PATH_LENGTH} characters"
    elif _CONTROL.search(path):
        problem = "contains control characters"
    elif "\\" in path:
        problem = "contains a backslash"
    elif path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        problem = "is absolute"
    elif any(part in ("", ".", "..") for part in path.split("/")):
        problem = "has an empty, '.' or '..' component"
    if problem:
        raise InvalidRequestError(f"Invalid file path {_shown(path)}: it {problem}.", param="path",
                                  code="invalid_path")
    return path


def _shown(value: object) -> str:
    """The rejected value, made printable and short, so an error message cannot carry a control sequence."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
