"""The harness's ``free_port``: the port it hands out stays the test process's until a server binds it, so
parallel test workers (pytest-xdist), other test runs on the machine and outgoing connections cannot take
it in between; a server still binds it the way hypercorn does."""

from __future__ import annotations

import errno
import socket
import sys

import pytest

from e2e_harness import free_port

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="BSD and macOS do not let a port be held so")


def test_a_free_port_is_held_until_the_server_binds_it() -> None:
    port = free_port()
    with socket.socket() as other:  # a server elsewhere that does not share ports
        with pytest.raises(OSError) as taken:
            other.bind(("127.0.0.1", port))
        assert taken.value.errno == errno.EADDRINUSE


def test_a_server_binds_a_free_port_as_hypercorn_does_and_is_reached_there() -> None:
    port = free_port()
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            conn, _ = server.accept()
            conn.close()
    with pytest.raises(ConnectionRefusedError):  # nothing listens once the server is gone
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
