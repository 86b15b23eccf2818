"""Listening on a chosen TCP port, or on a free one when the scenario says 0."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (another process may still take it first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def bind_with_retry(
    host: str, port: int, listen: Callable[[int], Awaitable[None]], attempts: int = 5
) -> int:
    """Call ``listen(port)``; for port 0, try a few free ports in case one is taken meanwhile.

    Returns:
        The port that is now listening.

    Raises:
        OSError: The port (or every free port tried) could not be bound.
    """
    if port:
        await listen(port)
        return port
    problem: Exception | None = None
    for _ in range(attempts):
        candidate = free_port(host)
        try:
            await listen(candidate)
        except (OSError, RuntimeError) as exc:  # pymodbus reports a failed bind as RuntimeError
            problem = exc
            continue
        return candidate
    raise OSError(f"could not listen on any free port of {host} after {attempts} tries: {problem}")
