"""Start real ``p2pfl peer`` OS processes on 127.0.0.1 and watch them through their state directories."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pfl.identity import Identity, save_key

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class NodeSpec:
    index: int
    identity: Identity
    port: int
    directory: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def addr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.port}/p2p/{self.identity.peer_id}"

    @property
    def state(self) -> Path:
        return self.directory / f"state{self.index}"

    @property
    def config(self) -> Path:
        return self.directory / f"peer{self.index}.toml"


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


def write_config(spec: NodeSpec, sections: dict[str, dict[str, Any]]) -> None:
    lines = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
        lines.append("")
    spec.config.write_text("\n".join(lines))


class Cluster:
    """A set of peer processes; every wait is bounded."""

    def __init__(self, directory: Path, n: int, seed_base: int = 1) -> None:
        self.directory = directory
        self.specs = []
        for i in range(n):
            ident = Identity(bytes([seed_base + i]) * 32)
            key = directory / f"key{i}"
            if not key.exists():
                save_key(ident, key)
            self.specs.append(NodeSpec(i, ident, free_port(), directory))
        self.procs: dict[int, subprocess.Popen[str]] = {}

    def configure(self, i: int, sections: dict[str, dict[str, Any]]) -> None:
        spec = self.specs[i]
        peer = {
            "network_id": "digits",
            "key_file": f"key{i}",
            "listen": f"/ip4/127.0.0.1/tcp/{spec.port}",
            "state_dir": f"state{i}",
            "status_interval_s": 1,
        }
        peer.update(sections.pop("peer", {}))
        access = dict(sections.pop("access", {}))
        if "roster" not in access:
            access.setdefault("open", True)  # `p2pfl peer` needs a roster or an explicit open network
        write_config(spec, {"peer": peer, **sections, "access": access})

    def start(self, i: int, timeout: float = 60.0, args: tuple[str, ...] = ()) -> str:
        return self.start_many([i], timeout, args)[0]

    def start_many(self, indices: list[int], timeout: float = 60.0, args: tuple[str, ...] = ()) -> list[str]:
        """Launch every one of ``indices`` first, then wait for each to come online: their start-ups
        (interpreter, imports, libp2p host) overlap instead of adding up. Returns their online lines' ids."""
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        for i in indices:
            log = open(self.directory / f"peer{i}.log", "a")  # noqa: SIM115 - closed with the process
            self.procs[i] = subprocess.Popen(
                [sys.executable, "-m", "p2pfl.cli", "peer", "--config", str(self.specs[i].config), *args],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
                cwd=self.directory,
            )
        deadline = time.monotonic() + timeout
        ids = []
        for i in indices:
            proc = self.procs[i]
            assert proc.stdout is not None
            line = proc.stdout.readline()  # the peer prints one line once online
            if not line.startswith("peer ") or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"peer {i} did not come online: {line!r}; log: {self.log(i)[-2000:]}")
            ids.append(line.split()[1])
        return ids

    def log(self, i: int) -> str:
        path = self.directory / f"peer{i}.log"
        return path.read_text() if path.exists() else ""

    def events(self, i: int, limit: int = 15) -> list[str]:
        """The peer's last connection, eviction and warning log lines: what a failed assertion needs."""
        keys = ("WARNING", "ERROR p2pfl", "evict", "resync", "readmit", "joined", "resumed", "redial")
        return [line[:300] for line in self.log(i).splitlines() if any(k in line for k in keys)][-limit:]

    def explain(self, indices: list[int] | None = None) -> str:
        """Each peer's full status and its last events, for an assertion message."""
        out = []
        for i in range(len(self.specs)) if indices is None else indices:
            out.append(f"peer {i} status: {self.status(i)}")
            out += [f"  {line}" for line in self.events(i)]
        return "\n".join(out)

    def status(self, i: int) -> dict[str, Any] | None:
        path = self.specs[i].state / "status.json"
        try:
            return json.loads(path.read_text())  # type: ignore[no-any-return]
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def wait_rounds(self, indices: list[int], rounds: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = [(s := self.status(i)) is not None and s["round"] >= rounds for i in indices]
            if all(done):
                return
            for i in indices:
                if self.procs[i].poll() is not None:
                    raise AssertionError(f"peer {i} exited early: {self.log(i)[-3000:]}")
            time.sleep(0.25)
        explained = self.explain()
        raise AssertionError(f"peers {indices} did not reach round {rounds} in {timeout} s:\n{explained}")

    def stop(self, i: int, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        return self.stop_many([i], sig, timeout)[0]

    def stop_many(self, indices: list[int], sig: int = signal.SIGTERM, timeout: float = 30.0) -> list[int]:
        """Signal every one of ``indices`` first, then wait for each: no peer goes on training alone while
        the others stop one by one (a last peer's solo rounds on skewed data pull its model off)."""
        for i in indices:
            if self.procs[i].poll() is None:
                self.procs[i].send_signal(sig)
        return [self._wait_stopped(i, sig, timeout) for i in indices]

    def _wait_stopped(self, i: int, sig: int, timeout: float) -> int:
        proc = self.procs[i]
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise AssertionError(f"peer {i} did not stop within {timeout} s after {sig}") from None

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
