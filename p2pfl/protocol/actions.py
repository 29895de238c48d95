"""What the engine decides (actions the caller carries out) and the facts it reports (faults)."""

from __future__ import annotations

from dataclasses import dataclass

from p2pfl.wire import Header

DELTA_PROTOCOL = "/p2pfl/delta/1"
SNAPSHOT_PROTOCOL = "/p2pfl/snapshot/1"
#: the reason under which an input is counted when handling it raised an exception other than a WireError
#: (a bug of ours, or a decoder that is not total yet): the input is refused, the fault kept for the log
INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True)
class Publish:
    """Broadcast ``envelope`` on the network topic."""

    envelope: bytes
    seq: int


@dataclass(frozen=True)
class FetchPayload:
    """Fetch the payload named by ``header`` (by digest) from ``peer`` (sender first, then ``via``)."""

    peer: str
    via: str
    header: Header


@dataclass(frozen=True)
class RequestSnapshot:
    """Ask ``peer`` for a signed snapshot of its public model (``via`` may relay it if the sender is far)."""

    peer: str
    via: str


@dataclass(frozen=True)
class Evict:
    """Stop listening to ``peer``: disconnect it and penalise it in the transport."""

    peer: str
    reason: str


@dataclass(frozen=True)
class Readmit:
    """An eviction expired: accept ``peer`` again (its models are scored, not mixed, while on probation)."""

    peer: str
    evictions: int


@dataclass(frozen=True)
class Forget:
    """The engine forgot ``peer`` while it had a ban record (past the bound of remembered identities,
    :mod:`p2pfl.protocol.churn`): the transport drops its block and penalty too. Without this the transport's
    block list kept every identity ever evicted, however many the engine had forgotten; ``peer`` comes back
    as a new identity, which is what a fresh key gets anyway."""

    peer: str


@dataclass(frozen=True)
class PublishProof:
    """Broadcast an equivocation ``proof`` (encoded, verified) that convicts ``sender``: every peer that
    verifies it bans ``sender`` too. Sent at most once per convicted sender."""

    proof: bytes
    sender: str


Action = Publish | FetchPayload | RequestSnapshot | Evict | Readmit | Forget | PublishProof


@dataclass(frozen=True)
class Fault:
    """Handling an input from ``peer`` raised ``error`` (not a WireError): the input was refused and
    counted as ``internal_error``. The engine never logs; the caller takes these (``take_faults``)."""

    peer: str | None
    where: str
    error: BaseException


# --------------------------------------------------------------------------------- pacing decisions


@dataclass(frozen=True)
class Wait:
    """Not yet: look again at ``until`` (or earlier, when something changes)."""

    until: float


@dataclass(frozen=True)
class Start:
    """Go ahead; ``reason`` says why now (for logs and tests)."""

    reason: str


Decision = Wait | Start
