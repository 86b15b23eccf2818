"""Ports for several servers picked at once never repeat (the demo once gave two servers one)."""

from __future__ import annotations

from shulian.devservices import free_ports


def test_ports_picked_together_are_distinct_and_free() -> None:
    import socket

    ports = free_ports(200)

    assert len(set(ports)) == 200
    for port in ports[:5]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))  # still free: nothing kept it
