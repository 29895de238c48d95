"""A bug while handling a registry request or answer costs that one exchange only: the registry answers
``internal`` and keeps serving; a peer's client turns any failure of an answer into a failed call."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

import p2pfl.bootstrap.registry
import p2pfl.discovery.client
from p2pfl.bootstrap.service import Registry
from p2pfl.discovery import RegistryUnavailableError, decode_message, encode_message
from p2pfl.transport.memory import MemoryNetwork
from tests.bootstrap.test_client import TEST_CONFIG, clients, registry


def _raise(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("a bug")


def test_a_bug_in_the_registry_answers_internal_and_logs_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    reg = Registry(TEST_CONFIG)
    monkeypatch.setattr(p2pfl.bootstrap.registry, "decode_message", _raise)
    with caplog.at_level(logging.DEBUG):
        answer = decode_message(reg.handle("12D3KooWpeer", encode_message({"op": "status"}), 0.0))
    assert (False, "internal", "RuntimeError") == (answer["ok"], answer["error"], answer["detail"])
    assert 1 == reg.counters["error_internal"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert 1 == len(errors) and "peer=12D3KooWpeer" in errors[0].getMessage(), errors
    assert "RuntimeError" in errors[0].getMessage() and errors[0].exc_info is None
    monkeypatch.undo()
    assert decode_message(reg.handle("12D3KooWpeer", encode_message({"op": "status"}), 0.0))["ok"]


async def test_any_exception_decoding_a_registry_answer_fails_that_call_only(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.abc.Clock
) -> None:
    net = MemoryNetwork()
    async with registry(net) as (rt, _), clients(net, range(1, 2), "n", [f"memory/{rt.peer_id}"]) as (c,):
        assert 1 == await c.register()
        monkeypatch.setattr(p2pfl.discovery.client, "decode_message", _raise)
        with pytest.raises(RegistryUnavailableError, match="RuntimeError"):
            await c.register()
        assert [] == await c.find_peers()  # no raise: the registry's answer is dropped
        assert 0 == await c.unregister()
        monkeypatch.undo()
        assert 1 == await c.unregister()
