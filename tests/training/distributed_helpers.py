"""Helpers shared by the multi-process torch.distributed tests."""

from __future__ import annotations

import os
import socket
import sys


def free_port() -> int:
    """A free loopback TCP port for a gloo rendezvous (tcp:// init; file:// init aborted ranks now and then)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def exit_rank_now() -> None:
    """End a spawned rank without interpreter finalisation, after its results are written and the process group
    is destroyed. A rank aborted at exit now and then ("terminate called without an active exception", SIGABRT,
    a C++ thread still joinable when static objects are destroyed; pytorch/pytorch PR 179291 describes a gloo
    finalisation race of this kind): in full-suite runs under load, with file:// and with tcp:// rendezvous, never
    in 40 isolated runs. os._exit skips the interpreter's and the C++ runtime's finalisation; the exit code is 0
    only when everything before this call succeeded."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
