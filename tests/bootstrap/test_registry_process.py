"""The registry as a real process on 127.0.0.1, with real libp2p clients (every wait bounded)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import msgpack
import pytest
import trio

from p2pfl.discovery import (
    PROTOCOL_ID,
    BootstrapClient,
    RegistryError,
    RegistryUnavailableError,
    decode_message,
    dial_record,
    encode_message,
)
from p2pfl.identity import Identity
from p2pfl.transport import Libp2pConfig, Libp2pTransport

from .conftest import REPO, RegistryProcess, start_registry

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
CLIENT_CONFIG = Libp2pConfig(dial_timeout=3.0)


def ident(i: int) -> Identity:
    return Identity(bytes([i]) * 32)


@asynccontextmanager
async def clients(
    ids: range, network_id: str, registries: list[str], **kw: object
) -> AsyncIterator[list[BootstrapClient]]:
    async with AsyncExitStack() as stack:
        out = []
        for i in ids:
            t = await stack.enter_async_context(
                Libp2pTransport.open(
                    seed=ident(i).seed, network_id=network_id, listen=LOOPBACK, config=CLIENT_CONFIG
                )
            )
            out.append(BootstrapClient(t, ident(i), network_id, registries, **kw))  # type: ignore[arg-type]
        yield out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_two_networks_on_one_registry_never_see_each_other(registry_proc: RegistryProcess) -> None:
    addr = registry_proc.addr
    with trio.fail_after(30):
        async with clients(range(1, 4), "netA", [addr]) as a, clients(range(4, 6), "netB", [addr]) as b:
            for c in a + b:
                assert await c.register() == 1
            found_a = [await c.discover() for c in a]
            found_b = [await c.discover() for c in b]
            # the advertised addresses really reach the peer they name
            assert await dial_record(a[0].transport, found_a[0][0]) == found_a[0][0].peer_id
            for c in a + b:
                await c.unregister()
    ids_a = {ident(i).peer_id for i in range(1, 4)}
    ids_b = {ident(i).peer_id for i in range(4, 6)}
    for c, found in zip(a, found_a, strict=True):
        assert {r.peer_id for r in found} == ids_a - {c.identity.peer_id}
    for c, found in zip(b, found_b, strict=True):
        assert {r.peer_id for r in found} == ids_b - {c.identity.peer_id}


async def test_records_for_other_peers_forged_or_garbage_get_error_responses(
    registry_proc: RegistryProcess,
) -> None:
    with trio.fail_after(30):
        async with clients(range(10, 12), "netF", [registry_proc.addr]) as (mallory, victim):
            await victim.register()
            pid = await mallory.transport.connect(registry_proc.addr)

            async def ask(payload: bytes) -> dict[str, object]:
                raw = await mallory.transport.request(
                    pid, PROTOCOL_ID, payload, max_response=1 << 20, timeout=5
                )
                return decode_message(raw)

            # the victim's own, validly signed record, registered by someone else
            victims = victim.make_record().encoded
            assert (await ask(encode_message({"op": "register", "record": victims})))[
                "error"
            ] == "peer_mismatch"
            # mallory's record with victim's address swapped in: the signature breaks
            outer = msgpack.unpackb(mallory.make_record().encoded)
            body = msgpack.unpackb(outer[1])
            body["addrs"] = [
                a.replace(mallory.identity.peer_id, victim.identity.peer_id) for a in body["addrs"]
            ]
            outer[1] = msgpack.packb(dict(sorted(body.items())))
            resp = await ask(encode_message({"op": "register", "record": msgpack.packb(outer)}))
            assert resp["error"] in ("peer_mismatch", "bad_signature")
            outer = msgpack.unpackb(mallory.make_record().encoded)
            outer[2] = bytes(64)
            resp = await ask(encode_message({"op": "register", "record": msgpack.packb(outer)}))
            assert resp["error"] == "bad_signature"
            assert (await ask(b"\xff\x00garbage"))["ok"] is False
            assert (await ask(encode_message({"op": "discover", "net": "netF", "limit": 10**6})))[
                "error"
            ] == "schema"
            # the registry still holds exactly the victim's honest record
            found = await mallory.discover()
            assert [r.peer_id for r in found] == [victim.identity.peer_id]
            assert found[0].addrs == victim.make_record().addrs
            with pytest.raises(RegistryError) as info:
                await mallory._call(registry_proc.addr, {"op": "nope"})
            assert info.value.reason == "unknown_op"
            await victim.unregister()


async def test_expired_registrations_disappear(registry_proc: RegistryProcess) -> None:
    with trio.fail_after(30):
        async with clients(range(20, 22), "netT", [registry_proc.addr], ttl=1) as (short, watcher):
            await short.register()
            assert [r.peer_id for r in await watcher.discover()] == [short.identity.peer_id]
            t0 = trio.current_time()
            with trio.fail_after(5):
                while await watcher.discover():
                    await trio.sleep(0.1)
            assert trio.current_time() - t0 < 3


async def test_discovery_is_paginated(registry_proc: RegistryProcess) -> None:
    with trio.fail_after(40):
        async with clients(range(30, 37), "netP", [registry_proc.addr]) as cs:
            for c in cs:
                await c.register()
            found = await cs[0].discover(page_size=2)
            assert {r.peer_id for r in found} == {c.identity.peer_id for c in cs[1:]}
            assert len(await cs[0].discover(max_records=3, page_size=2)) == 3
            st = await cs[0].status(registry_proc.addr)
            assert st["status"]["counters"]["ok_discover"] >= 4
            for c in cs:
                await c.unregister()


async def test_client_uses_whichever_registry_answers(registry_proc: RegistryProcess) -> None:
    dead = f"/ip4/127.0.0.1/tcp/{free_port()}/p2p/{ident(99).peer_id}"
    with trio.fail_after(30):
        async with clients(range(40, 42), "netD", [dead, registry_proc.addr], timeout=3.0) as cs:
            assert [await c.register() for c in cs] == [1, 1]
            assert [r.peer_id for r in await cs[0].discover()] == [cs[1].identity.peer_id]
        async with clients(range(42, 43), "netD", [dead], timeout=3.0) as (alone,):
            with pytest.raises(RegistryUnavailableError):
                await alone.discover()


def run_health(addr: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2pfl.bootstrap", "--health", addr, "--timeout", "5"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=REPO,
    )


def test_health_mode_reports_status_and_exit_codes(registry_proc: RegistryProcess) -> None:
    ok = run_health(registry_proc.addr)
    assert ok.returncode == 0, ok.stderr
    status = json.loads(ok.stdout)
    assert status["peer_id"] == registry_proc.addr.rsplit("/", 1)[1]
    assert status["rss_kib"] > 0 and "registrations" in status
    bad = run_health(f"/ip4/127.0.0.1/tcp/{free_port()}/p2p/{ident(98).peer_id}")
    assert bad.returncode == 1 and "not healthy" in bad.stderr


def test_sigterm_shuts_down_gracefully_and_releases_the_port(tmp_path: Path) -> None:
    reg = start_registry(tmp_path)
    assert (reg.key.stat().st_mode & 0o777) == 0o600
    t0 = time.monotonic()
    assert reg.stop() == 0
    assert time.monotonic() - t0 < 15
    with socket.socket() as s:
        s.bind(("127.0.0.1", reg.port))  # would raise if the listener survived
    log = (tmp_path / "registry.log").read_text()
    assert "event=shutdown signal=SIGTERM" in log
    assert "Traceback" not in log
    # the same key file is reused: same peer id on restart
    again = start_registry(tmp_path)
    try:
        assert again.addr.rsplit("/", 1)[1] == reg.addr.rsplit("/", 1)[1]
    finally:
        assert again.stop() == 0


def run_bootstrap(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2pfl.bootstrap", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )


def test_a_bad_listen_address_is_a_usage_error_and_creates_no_key(tmp_path: Path) -> None:
    out = run_bootstrap("--key", str(tmp_path / "r.key"), "--listen", "/ip4/1.2.3/tcp/x")
    assert 2 == out.returncode
    assert "Traceback" not in out.stderr
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .startswith("p2pfl-bootstrap: error: --listen: '/ip4/1.2.3/tcp/x' is not a multiaddr")
    )
    assert not (tmp_path / "r.key").exists()


def test_a_port_in_use_is_one_line_and_exit_3(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = run_bootstrap("--key", str(tmp_path / "r.key"), "--listen", f"/ip4/127.0.0.1/tcp/{port}")
    assert 3 == out.returncode, out.stderr
    lines = out.stderr.splitlines()
    assert [f"p2pfl-bootstrap: cannot listen on /ip4/127.0.0.1/tcp/{port}: Address already in use"] == lines
    assert not (tmp_path / "r.key").exists()  # refused before anything was written


def test_version_is_the_installed_distributions() -> None:
    from importlib.metadata import version

    out = run_bootstrap("--version")
    assert (0, f"p2pfl-bootstrap {version('p2pfl-gossip')}") == (out.returncode, out.stdout.strip())


def test_the_registry_logs_json_lines_with_its_peer_id_to_a_rotated_file(tmp_path: Path) -> None:
    log_file = tmp_path / "registry.jsonl"
    reg = start_registry(
        tmp_path, "--log-format", "json", "--log-file", str(log_file), "--log-level", "info",
        "--log-max-bytes", "4096",
    )  # fmt: skip
    try:
        registry_id = reg.addr.rpartition("/p2p/")[2]
    finally:
        assert reg.stop() == 0
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert records, "the registry logged nothing"
    assert all(r["peer_id"] == registry_id for r in records)
    assert any("shutdown" in r["msg"] for r in records)
