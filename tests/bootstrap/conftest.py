"""Registry subprocesses for the tests: ``python -m bootstrap`` on 127.0.0.1, its address read from stdout."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class RegistryProcess:
    proc: subprocess.Popen[bytes]
    addr: str
    key: Path

    @property
    def port(self) -> int:
        return int(self.addr.split("/")[4])

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS line")

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("registry did not exit within the timeout after SIGTERM") from None


def start_registry(directory: Path, *args: str, timeout: float = 30.0) -> RegistryProcess:
    """Start a registry and wait (bounded) for the multiaddr it prints as its first stdout line."""
    key = directory / "registry.key"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    listen = "/ip4/127.0.0.1/tcp/0"
    cmd = [sys.executable, "-m", "p2pfl.bootstrap", "--key", str(key), "--listen", listen, *args]
    with open(directory / "registry.log", "wb") as log_file:  # the child keeps its own descriptor
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_file, env=env)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            proc.kill()
            proc.wait(5)
            log = (directory / "registry.log").read_text(errors="replace")
            raise AssertionError(f"registry did not print its address in time; log:\n{log}")
        if sel.select(min(left, 0.5)):
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                continue
            line += chunk
    sel.close()
    addr = line.decode().strip()
    assert addr.startswith("/ip4/127.0.0.1/tcp/") and "/p2p/12D3KooW" in addr, addr
    return RegistryProcess(proc, addr, key)


@pytest.fixture(scope="module")
def registry_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """One shared registry with test knobs: ttl down to 0.5 s, sweeps every 0.2 s, generous rate."""
    reg = start_registry(
        tmp_path_factory.mktemp("registry"),
        "--min-ttl", "0.5", "--sweep-interval", "0.2", "--rate", "200", "--burst", "400",
        "--log-level", "info",
    )  # fmt: skip
    yield reg
    reg.stop()
