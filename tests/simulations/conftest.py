"""Fixtures of the simulation tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


@pytest.fixture
def port_1_taken(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A listening socket whose port the libp2p engine's plan gives to peer 1 (``_free_ports``): the peer's
    host cannot listen there and raises, as when another program takes the port between plan and bind."""
    from p2pfl.sim import engine_libp2p

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    free = engine_libp2p._free_ports

    def with_one_taken(n: int) -> list[int]:
        ports = free(n)
        ports[1] = int(taken.getsockname()[1])
        return ports

    monkeypatch.setattr(engine_libp2p, "_free_ports", with_one_taken)
    try:
        yield taken
    finally:
        taken.close()
