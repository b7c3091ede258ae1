"""Container health check without curl: ``python -m stack.healthcheck [URL]``.

Exits 0 when the URL (default ``$HEALTHCHECK_URL``) answers 200 within the timeout, 1 otherwise;
a ``tcp://host:port`` URL only needs the port to accept a connection (for servers with no health
route, such as an S3 endpoint). Standard library only, so it starts fast every few seconds.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.request


def check(url: str, timeout: float = 4.0) -> bool:
    if url.startswith("tcp://"):
        host, _, port = url.removeprefix("tcp://").rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout).close()
            return True
        except (OSError, ValueError):
            return False
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else os.environ.get("HEALTHCHECK_URL", "http://127.0.0.1:8080/health")
    ok = check(url)
    if not ok:
        print(f"unhealthy: {url}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
