"""Helpers shared by the multi-process torch.distributed tests."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A free loopback TCP port for a gloo rendezvous (tcp:// init; file:// init aborted ranks now and then)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
