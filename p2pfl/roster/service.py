"""The peer's side of membership: the gate at the edges (files, clock, neighbours).

:class:`Access` loads the roster a peer's config names (and the newer one it adopted before a restart, kept
in its state directory), answers the transport's connection filter and the engine's sender check through
the :class:`~p2pfl.roster.gate.Gate`, serves its roster and known certificates on ``/p2pfl/roster/1``,
and every ``refresh_s`` re-reads the roster file and asks its neighbours for theirs, adopting a newer
signed version (:func:`~p2pfl.roster.rules.why_not_newer`). The peer disconnects whoever the adopted roster
no longer admits. Roster expiry is absolute (unix time, the wall clock), unlike the protocol's timers.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from p2pfl.errors import P2PFLError
from p2pfl.identity import verify as verify_signature
from p2pfl.roster.codec import (
    MAX_EXCHANGE_BYTES,
    MAX_EXCHANGE_CERTS,
    decode_cert,
    decode_request,
    decode_response,
    decode_roster,
    encode_cert,
    encode_request,
    encode_response,
    encode_roster,
    peek_roster,
)
from p2pfl.roster.errors import RosterError
from p2pfl.roster.files import load_certificate, load_roster, save_roster
from p2pfl.roster.gate import Adoption, Gate
from p2pfl.roster.model import Roster
from p2pfl.roster.rules import verify
from p2pfl.transport.base import Transport

ROSTER_PROTOCOL = "/p2pfl/roster/1"
#: the adopted roster, kept in the peer's state directory so a restart does not fall back to an older file
STATE_FILE = "roster.bin"
#: neighbours asked per refresh at most (a random sample of the connected ones)
POLL_FANOUT = 8
POLL_TIMEOUT_S = 5.0

log = logging.getLogger("p2pfl.roster")


def wall_ms() -> int:
    return int(time.time() * 1000)


def check_roster_file(path: Path, network_id: str) -> Roster:
    """The verified roster in ``path`` (its expiry aside: an expired roster is reported, not fatal)."""
    return verify(load_roster(path), network_id=network_id, now_ms=None)


class Access:
    """Membership enforcement for one peer; ``now_ms``: the wall clock in unix ms (tests swap it)."""

    def __init__(
        self,
        roster_path: Path,
        network_id: str,
        *,
        certificates: Iterable[Path] = (),
        state_dir: Path | None = None,
        now_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.path = roster_path
        self.now_ms = now_ms
        self._state_path = state_dir / STATE_FILE if state_dir is not None else None
        roster = check_roster_file(roster_path, network_id)
        self.gate = Gate(roster, network_id=network_id)
        self._stamp = self._file_stamp()
        if self._state_path is not None and self._state_path.exists():
            try:
                self._adopt(load_roster(self._state_path), "state directory")
            except (RosterError, OSError) as exc:
                log.warning("ignoring the kept roster %s: %s", self._state_path, exc)
        now = self.now_ms()
        for path in certificates:
            why = self.gate.add_certificate(load_certificate(path), now)
            if why is not None:
                raise RosterError(why, f"certificate {path} is not valid under the roster: {why}")

    # --------------------------------------------------------------------------------- admission
    def allowed(self, peer_id: str) -> bool:
        return self.gate.check(peer_id, self.now_ms())

    def refused_among(self, peers: Iterable[str]) -> list[str]:
        return self.gate.refused_now(peers, self.now_ms())

    def expired(self) -> bool:
        return self.gate.roster.expired(self.now_ms())

    def status(self) -> dict[str, object]:
        return self.gate.summary(self.now_ms())

    def groups(self) -> tuple[dict[str, str], dict[str, float]]:
        """(peer id -> org, org -> max share): what the engine's per-group share cap needs."""
        return self.gate.groups(), self.gate.caps()

    # --------------------------------------------------------------------------------- adoption
    def _adopt(self, candidate: Roster, source: str) -> bool:
        outcome: Adoption = self.gate.offer(candidate, self.now_ms())
        if outcome.reason is None:
            log.info("adopted roster version %d from %s", outcome.version, source)
            self._keep()
            return True
        if outcome.reason != "stale_version":
            log.warning("refused roster version %d from %s: %s", candidate.version, source, outcome.reason)
        return False

    def _keep(self) -> None:
        if self._state_path is not None:
            try:
                save_roster(self._state_path, self.gate.roster)
            except OSError as exc:  # the roster stays adopted in memory; the next adoption retries
                log.warning("cannot keep the adopted roster in %s: %s", self._state_path, exc)

    def _file_stamp(self) -> bytes | None:
        """A digest of the roster file's bytes (None: unreadable). Not its mtime: a file rewritten within one
        tick of the filesystem's coarse clock keeps the same ``st_mtime_ns``, and the new version was missed
        for good (measured: a test that rewrote the roster right after the peer started timed out)."""
        try:
            return hashlib.blake2b(self.path.read_bytes(), digest_size=16).digest()
        except OSError:
            return None

    def reload(self) -> bool:
        """Re-read the roster file if it changed (an operator dropped a new version there); adopted?"""
        stamp = self._file_stamp()
        if stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            return self._adopt(load_roster(self.path), str(self.path))
        except (RosterError, OSError) as exc:
            log.warning("cannot reload the roster file %s: %s", self.path, exc)
            return False

    def note_expiry(self) -> None:
        """While the roster has expired, say so at every refresh, loudly (the status shows it too)."""
        if self.expired():
            log.error(
                "roster version %d of network %s expired: refusing every peer until a newer signed roster "
                "is placed at %s",
                self.gate.roster.version,
                self.gate.roster.network_id,
                self.path,
            )

    # --------------------------------------------------------------------------------- exchange
    async def serve(self, peer: str, request: bytes) -> bytes:
        """``/p2pfl/roster/1``: our roster if newer than the requester's, and the certificates we know."""
        try:
            theirs = decode_request(request)
        except RosterError as exc:
            raise RosterError(exc.reason, f"bad roster request: {exc}") from None
        roster = self.gate.roster
        body = encode_roster(roster) if roster.version > theirs else None
        certs = [encode_cert(c) for c in self.gate.certificates()[:MAX_EXCHANGE_CERTS]]
        return encode_response(body, certs)

    def take_response(self, peer: str, data: bytes) -> bool:
        """Apply a neighbour's answer; whether a newer roster was adopted. Never raises for its bytes."""
        try:
            roster_bytes, certs = decode_response(data)
        except RosterError as exc:
            self.gate.rosters_refused[exc.reason] += 1
            return False
        adopted = False
        if roster_bytes is not None:
            try:
                why = self._precheck(roster_bytes)
                if why is None:
                    adopted = self._adopt(decode_roster(roster_bytes), f"peer {peer}")
                elif why != "stale_version":
                    self.gate.rosters_refused[why] += 1
            except RosterError as exc:
                self.gate.rosters_refused[exc.reason] += 1
        now = self.now_ms()
        for raw in certs:
            try:
                self.gate.add_certificate(decode_cert(raw), now)
            except RosterError as exc:
                self.gate.certs_refused[exc.reason] += 1
        return adopted

    def _precheck(self, data: bytes) -> str | None:
        """The adoption rule's cheap part, on the raw bytes: operator, network, version, signature."""
        network_id, version, operator, body, signature = peek_roster(data)
        current = self.gate.roster
        if operator != current.operator:
            return "wrong_operator"
        if network_id != current.network_id:
            return "wrong_network"
        if version <= current.version:
            return "stale_version"
        if not verify_signature(operator, body, signature):
            return "bad_signature"
        return None

    async def poll(self, transport: Transport, peers: list[str]) -> bool:
        """Ask up to ``POLL_FANOUT`` of ``peers`` for their roster; whether a newer one was adopted."""
        sample = random.sample(peers, min(POLL_FANOUT, len(peers)))
        adopted = False
        ask = encode_request(self.gate.roster.version)
        for peer in sample:
            with contextlib.suppress(P2PFLError):
                data = await transport.request(
                    peer, ROSTER_PROTOCOL, ask, max_response=MAX_EXCHANGE_BYTES, timeout=POLL_TIMEOUT_S
                )
                adopted |= self.take_response(peer, data)
        return adopted
