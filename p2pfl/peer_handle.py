"""A running :class:`~p2pfl.peer.Peer` for programs that do not run trio (threads, asyncio)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import trio

from p2pfl.errors import P2PFLError
from p2pfl.identity import Identity
from p2pfl.learner import Learner

if TYPE_CHECKING:
    from p2pfl.peer import Params, Peer, PeerConfig, TransportFactory
    from p2pfl.rollout import Served


class PeerHandle:
    """A running :class:`Peer` for non-trio programs: trio runs in a thread of its own.

    All methods are thread-safe. ``start`` returns once the peer is online (or raises its start-up error).
    """

    def __init__(self, peer: Peer, rounds: int | None) -> None:
        self.peer = peer
        self._rounds = rounds
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._main, name=f"p2pfl-peer-{peer.peer_id[-8:]}", daemon=True
        )
        self._finished = threading.Event()

    @classmethod
    def start(
        cls,
        config: PeerConfig,
        learner: Learner,
        identity: Identity | None = None,
        *,
        rounds: int | None = None,
        transport: TransportFactory | None = None,
        timeout: float = 60.0,
        metrics: Any = None,
    ) -> PeerHandle:
        """``metrics``: as :class:`~p2pfl.peer.Peer`'s (``"HOST:PORT"`` to serve, or a registry)."""
        from p2pfl.peer import Peer  # the peer module re-exports this one

        handle = cls(Peer(config, learner, identity, transport=transport, metrics=metrics), rounds)
        handle._thread.start()
        if not handle._ready.wait(timeout):
            raise P2PFLError(f"peer did not come online within {timeout} s")
        if handle._error is not None:
            raise handle._error
        return handle

    def _main(self) -> None:
        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            try:
                async with self.peer:
                    self._ready.set()
                    await self.peer.run(self._rounds)
                    await self.peer._stopped.wait()
            except BaseException as exc:
                self._error = exc
                raise

        try:
            trio.run(main)
        except BaseException as exc:
            self._error = self._error or exc
        finally:
            self._ready.set()
            self._finished.set()

    def _call(self, fn: Callable[[], Any]) -> Any:
        if self._token is None or self._finished.is_set():
            raise P2PFLError("the peer is not running")
        return trio.from_thread.run_sync(fn, trio_token=self._token)

    @property
    def peer_id(self) -> str:
        return self.peer.peer_id

    @property
    def listen_addrs(self) -> list[str]:
        return list(self._call(lambda: self.peer.listen_addrs))

    def status(self) -> dict[str, Any]:
        return dict(self._call(self.peer.status))

    def params(self) -> Params:
        return dict(self._call(self.peer.params))

    # ------------------------------------------------------------------- serving (docs/rollout.md)

    def serving(self) -> Served | None:
        """The version the peer serves (``None`` before its first round)."""
        return self._call(self.peer.rollout.serving)  # type: ignore[no-any-return]

    def model_for(self, key: str | bytes) -> Served | None:
        """The model for request ``key``: the canary for a consistent ``canary_fraction`` of the keys while
        a candidate is in canary, else the serving version."""
        return self._call(lambda: self.peer.rollout.model_for(key))  # type: ignore[no-any-return]

    def submit_feedback(self, x: Any, y: Any) -> int:
        """Labelled samples (x: (n, *features), y: (n,) class indices) for judging candidate versions;
        returns how many are kept. A :class:`~p2pfl.rollout.FeedbackError` says what is wrong with them."""
        return int(self._call(lambda: self.peer.rollout.submit_feedback(x, y)))

    def quality_snapshot(self) -> Mapping[str, float]:
        return dict(self._call(self.peer.quality_snapshot))

    def connect(self, addr: str) -> str:
        if self._token is None or self._finished.is_set():
            raise P2PFLError("the peer is not running")
        try:
            return str(trio.from_thread.run(self.peer.connect, addr, trio_token=self._token))
        except trio.RunFinishedError:
            raise P2PFLError("the peer is not running") from None

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the peer stops (its rounds are done and it was stopped); True if it did."""
        return self._finished.wait(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        if not self._finished.is_set() and self._token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self.peer.stop, trio_token=self._token)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise P2PFLError(f"peer did not stop within {timeout} s")
        if self._error is not None and not isinstance(self._error, trio.Cancelled | KeyboardInterrupt):
            raise self._error

    def __enter__(self) -> PeerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
