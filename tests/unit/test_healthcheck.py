"""The container health check: HTTP 200 is healthy, anything else (or a closed port) is not."""

from __future__ import annotations

import socket

from stack.healthcheck import check, main
from tests.helpers.ports import free_port


def test_closed_port_is_unhealthy():
    port = free_port()
    assert not check(f"http://127.0.0.1:{port}/health", timeout=1)
    assert not check(f"tcp://127.0.0.1:{port}", timeout=1)
    assert main(["healthcheck", f"tcp://127.0.0.1:{port}"]) == 1


def test_open_tcp_port_is_healthy():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert check(f"tcp://127.0.0.1:{server.getsockname()[1]}", timeout=1)


def test_bad_url_is_unhealthy():
    assert not check("not a url")
    assert not check("tcp://nohostport")
