"""``model-service keys create|list|revoke``: manage the gateway's user API keys over its admin routes.

The commands call a running gateway (``--url``, default ``http://127.0.0.1:8080``) with the admin key
(``--admin-key`` or ``MODEL_SERVICE_ADMIN_KEY``), so the gateway stays the only writer of its key file
and a revocation takes effect at once. ``create`` prints the new secret once, alone on stdout (the rest
goes to stderr); nothing shows it again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"


class CommandError(Exception):
    """A failure worth one ``error:`` line and exit status 1."""


def add_keys_commands(sub: Any) -> None:
    """Add the ``keys`` group to the ``model-service`` subcommands."""
    keys = sub.add_parser("keys", help="manage gateway user API keys (create, list, revoke)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)

    create = keys_sub.add_parser("create", help="make a key; its secret is printed once")
    create.add_argument("--name", required=True, help="who or what the key is for")
    create.add_argument("--models", default=None,
                        help="comma-separated model ids the key may use (default: every model)")
    create.add_argument("--rpm", type=int, default=None, help="requests per minute (default: unlimited)")
    create.add_argument("--tpm", type=int, default=None, help="tokens per minute (default: unlimited)")
    create.set_defaults(func=_run(_create))

    listing = keys_sub.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--json", action="store_true", help="print the gateway's JSON answer")
    listing.set_defaults(func=_run(_list))

    revoke = keys_sub.add_parser("revoke", help="revoke a key; its next request gets 401")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=_run(_revoke))

    for parser in (create, listing, revoke):
        # An admin on another machine sets the gateway once instead of passing --url to every call.
        parser.add_argument("--url", default=os.environ.get("MODEL_SERVICE_GATEWAY_URL", DEFAULT_URL),
                            help=f"the gateway (default: $MODEL_SERVICE_GATEWAY_URL or {DEFAULT_URL})")
        parser.add_argument("--admin-key", default=None,
                            help="the admin key (default: $MODEL_SERVICE_ADMIN_KEY)")


def _run(command: Any) -> Any:
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return int(command(args) or 0)
        except CommandError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return wrapper


def _call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    admin_key = args.admin_key or os.environ.get("MODEL_SERVICE_ADMIN_KEY")
    headers = {"authorization": f"Bearer {admin_key}"} if admin_key else {}
    url = args.url.rstrip("/") + path
    try:
        with httpx.Client(timeout=30, trust_env=False) as client:
            resp = client.request(method, url, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise CommandError(f"cannot reach the gateway at {args.url} ({type(exc).__name__}: {exc})") from None
    if resp.status_code >= 400:
        raise CommandError(f"the gateway answered HTTP {resp.status_code}: {_message(resp)}")
    return resp.json()


def _message(resp: httpx.Response) -> str:
    try:
        return str(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return resp.text[:300]


def _create(args: argparse.Namespace) -> int:
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    key = _call(args, "POST", "/admin/keys", {"name": args.name, "models": models, "rpm": args.rpm, "tpm": args.tpm})
    print(f"created {key['id']} ({key['name']}): models {_models(key)}, rpm {key['rpm'] or '-'}, "
          f"tpm {key['tpm'] or '-'}", file=sys.stderr)
    print("secret (shown only now; store it safely):", file=sys.stderr)
    print(key["key"])  # alone on stdout: KEY=$(model-service keys create ...) keeps just the secret
    return 0


def _list(args: argparse.Namespace) -> int:
    keys = _call(args, "GET", "/admin/keys")["data"]
    if args.json:
        print(json.dumps(keys, indent=1))
        return 0
    print(f"{'ID':22} {'NAME':24} {'PREFIX':12} {'MODELS':28} {'RPM':>6} {'TPM':>8} {'CREATED':21} REVOKED")
    for key in keys:
        print(f"{key['id']:22} {key['name'][:24]:24} {key['prefix']:12} {_models(key)[:28]:28} "
              f"{key['rpm'] or '-':>6} {key['tpm'] or '-':>8} {key['created_at']:21} {key['revoked_at'] or '-'}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    key = _call(args, "DELETE", f"/admin/keys/{args.key_id}")
    print(f"revoked {key['id']} ({key['name']}) at {key['revoked_at']}")
    return 0


def _models(key: dict[str, Any]) -> str:
    return ",".join(key["models"]) if key.get("models") is not None else "all"
