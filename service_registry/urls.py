"""Checks for the addresses the registry hands to the gateway.

Every URL in the snapshot is something the gateway will connect to, so bad ones are refused at the
door (a 400 naming the field) instead of turning into a confusing probe failure later. Credentials
inside a URL are refused too: ``/services`` is readable by operators and would show them.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

# Addresses a server binds to but no client can connect to.
_UNROUTABLE_HOSTS = {"0.0.0.0", "::"}


def normalize_url(value: str) -> str:
    """An ``http(s)://host[:port][/path]`` URL without a trailing ``/``; raises ``ValueError`` otherwise."""
    text = value.strip()
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in text):
        raise ValueError(f"URL must not contain spaces or control characters (got {text!r})")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"URL must start with http:// or https:// (got {text!r})")
    if not parts.hostname:
        raise ValueError(f"URL has no host (got {text!r})")
    if parts.username is not None or parts.password is not None:
        raise ValueError("URL must not carry credentials; configure an api_key instead")
    if parts.query or parts.fragment:
        raise ValueError("URL must not have a query string or fragment")
    if parts.hostname in _UNROUTABLE_HOSTS:
        raise ValueError(f"{parts.hostname} is a bind address, not one clients can reach; advertise a real host")
    try:
        _ = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"URL has an invalid port (got {text!r})") from exc
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def api_base_of(url: str) -> str:
    """The OpenAI API base of an external upstream: ``/v1`` is added when the URL has no path.

    ``http://vllm:8000`` and ``http://vllm:8000/v1`` both mean ``http://vllm:8000/v1``; a URL with
    some other path (``https://host/openai/v1``) is taken as the base as written, because hosted
    OpenAI-compatible APIs put their base in many places.
    """
    base = normalize_url(url)
    return base if urlsplit(base).path else f"{base}/v1"
