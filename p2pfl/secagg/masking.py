"""One member's state in a group round and the maths on it (the base of :class:`~p2pfl.secagg.group.
GroupRound`).

:mod:`p2pfl.secagg.group` keeps the protocol's steps (messages in, phases and their checks); this module, what
the steps compute: dealing the signed Shamir shares of our secrets, masking our input, rebuilding the secrets
the others revealed and removing the masks to decode the mean.
"""

from __future__ import annotations

import enum
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from p2pfl.identity import Identity
from p2pfl.secagg import crypto, shamir
from p2pfl.secagg.errors import SecAggError
from p2pfl.secagg.fixedpoint import Ring
from p2pfl.secagg.messages import (
    NONCE_SIZE,
    Advertise,
    Body,
    Masked,
    Message,
    SharePlain,
    Shares,
    View,
    encode,
    encode_body,
    seal_shares,
    share_statement,
)
from p2pfl.secagg.spec import GroupSpec


class Phase(enum.IntEnum):
    ADVERTISE = 0
    SHARE_KEYS = 1
    MASKED_INPUT = 2
    CONSISTENCY = 3
    UNMASK = 4
    DONE = 5
    FAILED = 6


@dataclass(frozen=True)
class Send:
    """Send ``data`` to the members with these indices (the driver maps them to peer ids)."""

    to: tuple[int, ...]
    data: bytes


@dataclass(frozen=True)
class GroupResult:
    """The round's mean (float32), the members whose inputs it averages, and those who dropped after
    sharing their keys (their masks were removed through the others' shares)."""

    mean: npt.NDArray[np.float32]
    survivors: tuple[int, ...]
    recovered: tuple[int, ...]


class GroupState:
    """One member's state in one group round (see :class:`~p2pfl.secagg.group.GroupRound`), and the maths."""

    def __init__(
        self,
        spec: GroupSpec,
        identity: Identity,
        round_: int,
        vector: npt.NDArray[np.floating],
        *,
        now: float,
        randbytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.spec = spec
        self.round = round_
        self.me = spec.index(identity.peer_id)
        self._id = identity
        self._rand = randbytes
        if np.asarray(vector).shape != (spec.dim,):
            raise SecAggError(
                "malformed", f"the input has shape {np.asarray(vector).shape}, not ({spec.dim},)"
            )
        self._x, self.clipped = spec.fixed.encode(vector)
        self._mask_sk, self._mask_pk = crypto.mask_keypair(randbytes(crypto.KEY_SIZE))
        self._b = randbytes(crypto.SEED_SIZE)
        self._box_sk = crypto.identity_box_key(identity)
        self._context = spec.group + round_.to_bytes(8, "big")
        self.phase = Phase.ADVERTISE
        self.deadline = now + spec.advertise_timeout_s
        self.result: GroupResult | None = None
        self.failure: str | None = None
        self.failure_message = ""
        self.rejections: Counter[str] = Counter()
        self.bytes_sent = 0
        self._seen: set[bytes] = set()
        self._refused: set[tuple[int, Phase]] = set()
        self._pending: list[Message] = []
        self._adverts: dict[int, Advertise] = {}
        self._held: dict[int, SharePlain] = {}  # dealer -> the shares it dealt us
        self._masked: dict[int, Masked] = {}
        self._views: dict[int, View] = {}
        self._revealed: dict[tuple[int, str], dict[int, bytes]] = {}  # (dealer, kind) -> x -> share
        self._u1: tuple[int, ...] = ()
        self._u2: tuple[int, ...] = ()
        self._u3: tuple[int, ...] = ()
        self._dropped: tuple[int, ...] = ()
        self._dealt: list[SharePlain] = []
        self._commit_b = crypto.commit(self._b, self._context, b"b")
        self._adverts[self.me] = Advertise(self._mask_pk, self._commit_b)

    # ---------------------------------------------------------------------------- the maths

    def _deal(self) -> list[Send]:
        n, t = len(self.spec.members), self.spec.threshold
        shares_b = shamir.split(self._b, n, t, self._rand)
        shares_s = shamir.split(self._mask_sk, n, t, self._rand)
        self._dealt = []
        for v in range(n):
            plain = SharePlain(
                shares_b[v],
                self._id.sign(
                    share_statement(self.spec.group, self.round, self.me, v, kind="b", share=shares_b[v])
                ),
                shares_s[v],
                self._id.sign(
                    share_statement(self.spec.group, self.round, self.me, v, kind="s", share=shares_s[v])
                ),
            )
            self._dealt.append(plain)
        out = []
        for v in self._others(self._u1):
            nonce = self._rand(NONCE_SIZE)
            ct = seal_shares(self._box_sk, crypto.peer_box_key(self.spec.members[v]), nonce, self._dealt[v])
            out.append(self._send((v,), "shares", Shares(v, nonce, ct)))
        return out

    def _own_shares(self) -> SharePlain:
        return self._dealt[self.me]

    def _sign(self, u: int, v: int) -> int:
        return 1 if u < v else -1

    def _masked_input(self) -> Ring:
        d = self.spec.dim
        y = self._x + crypto.prg(crypto.derive(self._b, self._context, b"self"), d)
        for v in self._others(self._u2):
            seed = crypto.pair_seed(
                self._mask_sk, self._adverts[v].mask_pk, self._context, *self._ids(self.me, v)
            )
            mask = crypto.prg(seed, d)
            y = y + mask if self._sign(self.me, v) > 0 else y - mask
        return y.astype(np.uint32)

    def _ids(self, u: int, v: int) -> tuple[str, str]:
        return self.spec.members[u], self.spec.members[v]

    def _needed(self) -> set[tuple[int, str]]:
        return {(w, "b") for w in self._u3} | {(w, "s") for w in self._dropped}

    def _secret(self, w: int, kind: str) -> bytes:
        secret = shamir.combine(self._revealed[(w, kind)], self.spec.threshold)
        advert = self._adverts.get(w)
        if kind == "b":
            ok = advert is not None and crypto.commit(secret, self._context, b"b") == advert.commit_b
        else:
            ok = advert is not None and crypto.mask_public(secret) == advert.mask_pk
        if not ok:
            raise SecAggError(
                "unrecoverable", f"member {w}'s {kind} secret does not match what it advertised"
            )
        return secret

    def _unmask(self) -> GroupResult:
        d = self.spec.dim
        total = np.zeros(d, dtype=np.uint32)
        for u in self._u3:
            total += np.frombuffer(self._masked[u].vector, dtype="<u4").astype(np.uint32)
            total -= crypto.prg(crypto.derive(self._secret(u, "b"), self._context, b"self"), d)
        for w in self._dropped:
            s_w = self._secret(w, "s")
            for u in self._u3:
                if w not in self._masked[u].mask_set:
                    continue
                seed = crypto.pair_seed(s_w, self._adverts[u].mask_pk, self._context, *self._ids(u, w))
                mask = crypto.prg(seed, d)
                total = total - mask if self._sign(u, w) > 0 else total + mask
        mean = self.spec.fixed.decode_mean(total, len(self._u3))
        return GroupResult(mean, self._u3, self._dropped)

    # ---------------------------------------------------------------------------- messages out

    def _others(self, among: tuple[int, ...] | None = None) -> tuple[int, ...]:
        pool = range(len(self.spec.members)) if among is None else among
        return tuple(m for m in pool if m != self.me)

    def _send(self, to: tuple[int, ...], kind: str, body: Body) -> Send:
        data = encode(self._id, kind, self.spec.group, self.round, encode_body(body))
        self.bytes_sent += len(data) * len(to)
        return Send(to, data)
