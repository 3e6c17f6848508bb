"""Loopback TCP ports: pick a free one, or check that a fixed one is free before a child fails to bind it."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the kernel's choice for an ephemeral bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def resolve_port(host: str, port: int, variable: str) -> int:
    """``port`` itself if it can be bound, a free port if it is 0; a clear error naming ``variable`` otherwise.

    Checking up front turns gunicorn's or Flower's bind traceback into one sentence the user can act on.
    """
    if port == 0:
        return free_port(host)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise RuntimeError(
                f"port {port} on {host} is not available ({error.strerror}); set {variable} to another port "
                f"(0 picks a free one)"
            ) from None
    return port
