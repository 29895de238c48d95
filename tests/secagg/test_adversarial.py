"""Bad input to a group round: a malformed share, a wrong-group member, a replayed share, a duplicate,
garbage. Each is rejected and counted; the round completes without it or fails clearly below threshold;
never a crash, never a wrong mean."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pfl.secagg import Phase
from p2pfl.secagg.messages import Shares, decode, encode, encode_body

from .harness import Net, identities
from .test_group import assert_mean

ATTACKER, VICTIM = 4, 1


def _kind(net: Net, data: bytes) -> str:
    return decode(data, group=net.spec.group, members=net.spec.members, dim=net.spec.dim).kind


def test_a_malformed_share_is_rejected_and_the_round_completes_without_its_dealer() -> None:
    """The attacker sends the victim a shares message it signed itself (so it passes the outer checks)
    whose ciphertext is garbage: the victim counts ``bad_share``, does not mask with the attacker, and
    every member leaves the attacker's input out (it masked with the victim, the victim not with it)."""

    def tamper(src: int, dst: int, data: bytes) -> list[bytes]:
        if src == ATTACKER and dst == VICTIM and _kind(net, data) == "shares":
            body = Shares(VICTIM, bytes(24), bytes(200))
            return [encode(net.ident[ATTACKER], "shares", net.spec.group, net.round, encode_body(body))]
        return [data]

    net = Net(tamper=tamper)
    net.run()
    assert net.rounds[VICTIM].rejections["bad_share"] == 1
    honest = [k for k in range(8) if k != ATTACKER]
    assert_mean(net, honest, among=honest)
    assert net.rounds[ATTACKER].failure == "inconsistent"  # it learns it was left out


def test_a_share_with_a_forged_dealer_signature_is_rejected() -> None:
    """A man in the middle cannot re-encrypt a share: the ciphertext is authenticated by the Box. The
    attacker member itself encrypting shares whose dealer signatures are wrong is caught too."""
    from p2pfl.secagg import crypto
    from p2pfl.secagg.messages import SharePlain, seal_shares

    def tamper(src: int, dst: int, data: bytes) -> list[bytes]:
        if src == ATTACKER and dst == VICTIM and _kind(net, data) == "shares":
            plain = SharePlain(bytes(66), bytes(64), bytes(66), bytes(64))
            ident = net.ident[ATTACKER]
            ct = seal_shares(
                crypto.identity_box_key(ident),
                crypto.peer_box_key(net.spec.members[VICTIM]),
                bytes(24),
                plain,
            )
            body = Shares(VICTIM, bytes(24), ct)
            return [encode(ident, "shares", net.spec.group, net.round, encode_body(body))]
        return [data]

    net = Net(tamper=tamper)
    net.run()
    assert net.rounds[VICTIM].rejections["bad_share"] == 1
    honest = [k for k in range(8) if k != ATTACKER]
    assert_mean(net, honest, among=honest)
    assert net.rounds[ATTACKER].failure == "inconsistent"  # it learns it was left out


@pytest.mark.parametrize("crashed", [2, 3])
def test_a_revealed_share_altered_by_its_holder_is_rejected(crashed: int) -> None:
    """In the unmask phase the attacker reveals garbage shares (keeping the dealers' signatures) while
    ``crashed`` honest members vanish: with 2 gone the others still have 5 honest shares of every secret
    and finish with the right mean; with 3 gone the attacker's share would be the fifth: it is rejected,
    counted, and the round fails ``below_threshold`` instead of rebuilding a wrong secret."""
    from p2pfl.secagg.messages import Revealed, Unmask

    def tamper(src: int, dst: int, data: bytes) -> list[bytes]:
        if src == ATTACKER and _kind(net, data) == "unmask":
            msg = decode(data, group=net.spec.group, members=net.spec.members, dim=net.spec.dim)
            items = tuple(Revealed(r.dealer, r.kind, bytes(66), r.signature) for r in msg.body.items)  # type: ignore[union-attr]
            body = Unmask(items)
            return [encode(net.ident[ATTACKER], "unmask", net.spec.group, net.round, encode_body(body))]
        return [data]

    gone = [0, 2, 7][:crashed]
    net = Net(tamper=tamper, crash=dict.fromkeys(gone, Phase.UNMASK))
    net.run()
    honest = [k for k in net.alive() if k != ATTACKER]
    if crashed == 2:
        assert_mean(net, list(range(8)), among=honest)
    else:
        for k in honest:
            assert net.rounds[k].rejections["bad_share"] == 1
            assert net.rounds[k].failure == "below_threshold"
            assert net.rounds[k].result is None


def test_messages_from_a_wrong_group_member_are_rejected_and_counted() -> None:
    """An outsider (not in the member list) and a member of another group (same people, other threshold:
    another group id) inject adverts and masked inputs into every member; all are counted, none enters."""
    outsider = identities(1, seed=99)[0]
    net = Net()
    other_group = Net(t=6).spec.group
    for dst in range(8):
        for who, grp in ((outsider, net.spec.group), (net.ident[2], other_group)):
            adv = encode(who, "advertise", grp, net.round, [bytes(range(32)), bytes(32)])
            net.inject(dst, adv)
    net.run()
    for k in range(8):
        if k != 2:
            assert net.rounds[k].rejections["wrong_group"] == 1
        assert net.rounds[k].rejections["not_member"] == 1
    assert_mean(net, list(range(8)))


def test_replayed_shares_are_rejected_and_the_round_completes() -> None:
    """Every shares message of round 1 is replayed into round 2 (and each round-2 message is delivered
    twice): all counted as ``replay``, the round-2 mean is right."""
    first = Net(round=1, seed=5).run()
    old = [(dst, d) for src, dst, d in first.delivered if _kind(first, d) == "shares"]

    def twice(src: int, dst: int, data: bytes) -> list[bytes]:
        return [data, data]

    second = Net(round=2, seed=5, tamper=twice)
    for dst, data in old:
        second.inject(dst, data)
    second.run()
    for k in range(8):
        assert second.rounds[k].rejections["replay"] >= 7 + 7  # 7 old shares + copies of this round's
    assert_mean(second, list(range(8)))


def test_an_equivocating_member_is_counted_and_cannot_change_the_mean() -> None:
    """The attacker sends a second, different masked vector after its first: ``duplicate``."""

    def tamper(src: int, dst: int, data: bytes) -> list[bytes]:
        if src == ATTACKER and _kind(net, data) == "masked":
            msg = decode(data, group=net.spec.group, members=net.spec.members, dim=net.spec.dim)
            forged = encode(
                net.ident[ATTACKER],
                "masked",
                net.spec.group,
                net.round,
                [list(msg.body.mask_set), bytes(4 * net.dim)],  # type: ignore[union-attr]
            )
            return [data, forged]
        return [data]

    net = Net(tamper=tamper)
    net.run()
    assert all(net.rounds[k].rejections["duplicate"] == 1 for k in range(8) if k != ATTACKER)
    assert_mean(net, list(range(8)))


def test_a_member_lying_about_survivors_makes_the_round_fail_before_any_reveal() -> None:
    """A view that differs from ours: the round fails ``inconsistent`` and no share is revealed."""
    from p2pfl.secagg.messages import View

    def tamper(src: int, dst: int, data: bytes) -> list[bytes]:
        if src == ATTACKER and _kind(net, data) == "view":
            body = View((0, 1, 2, 3, 4, 5, 6))
            return [encode(net.ident[ATTACKER], "view", net.spec.group, net.round, encode_body(body))]
        return [data]

    net = Net(tamper=tamper)
    net.run()
    for k in range(8):
        if k != ATTACKER:
            assert net.rounds[k].failure == "inconsistent"
            assert net.rounds[k].result is None
    assert not any(_kind(net, d) == "unmask" for src, _dst, d in net.delivered if src != ATTACKER)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_garbage_and_mutated_messages_never_raise(data: st.DataObject) -> None:
    """Random bytes and byte-level mutations of real messages, fed to a member in the middle of a round:
    ``receive`` never raises, the round still completes with the right mean."""
    net = Net(dim=8, seed=1)
    if not hasattr(test_garbage_and_mutated_messages_never_raise, "msgs"):
        ref = Net(dim=8, seed=1).run()
        test_garbage_and_mutated_messages_never_raise.msgs = [d for _s, _d, d in ref.delivered]  # type: ignore[attr-defined]
    msgs: list[bytes] = test_garbage_and_mutated_messages_never_raise.msgs  # type: ignore[attr-defined]
    base = bytearray(data.draw(st.sampled_from(msgs)))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(base) - 1))
        base[i] = data.draw(st.integers(0, 255))
    junk = [bytes(base), data.draw(st.binary(max_size=300))]
    for k in (0, 3):
        for j in junk:
            net.inject(k, j)
    net.run()
    assert sum(sum(net.rounds[k].rejections.values()) for k in (0, 3)) >= 2
    assert_mean(net, list(range(8)))
    assert np.isfinite(net.rounds[0].result.mean).all()  # type: ignore[union-attr]


def test_an_old_key_advert_replayed_to_some_members_fails_the_round_instead_of_a_wrong_mean() -> None:
    """A member ran this round number before with other keys (a restart, or a round it left to join a later
    one): an attacker replays that old, validly signed advert to three members ahead of the new one. They
    mask against the old key, the others against the new one, so the pairwise masks would not cancel. The
    views carry a digest of the adverts used: the round fails ``inconsistent`` before any reveal, and no
    member ever holds a wrong mean."""
    from p2pfl.secagg import GroupRound

    from .harness import det_rand

    def tamper(src: int, dst: int, data: bytes) -> list[bytes]:
        if src == 0 and dst in (1, 2, 3) and _kind(net, data) == "advertise":
            return [old_advert, data]  # the new advert arrives second: a duplicate
        return [data]

    net = Net(tamper=tamper)
    assert net.xs is not None
    old = GroupRound(net.spec, net.ident[0], net.round, net.xs[0], now=0.0, randbytes=det_rand(999))
    old_advert = old.start()[0].data
    net.run()
    for k in range(8):
        r = net.rounds[k]
        if r.result is not None:  # whoever got a mean got the right one
            expected = net.plain_mean(list(r.result.survivors))
            assert np.max(np.abs(r.result.mean.astype(np.float64) - expected)) <= net.fixed.max_error()
        else:
            assert r.failure == "inconsistent", (k, r.failure, r.failure_message)
    assert not any(_kind(net, d) == "unmask" for _s, _d, d in net.delivered)


def test_a_share_message_replayed_to_other_members_does_not_leave_its_dealer_out() -> None:
    """Anyone on the network can copy member 6's (signed) shares message for member 1 to the others ahead of
    their own: each refuses the copy (``wrong_recipient``) but still waits for its own shares from member 6,
    so the round completes with all eight (taking the copy for member 6's word closed the phase early, left
    member 6 out and failed the round)."""
    copied: list[bytes] = []

    def tamper(src: int, dst: int, data: bytes) -> list[bytes]:
        if src == 6 and _kind(net, data) == "shares":
            if dst == 1:
                copied.append(data)
            elif copied:
                return [copied[0], data]
        return [data]

    net = Net(tamper=tamper)
    net.run()
    assert sum(net.rounds[k].rejections["wrong_recipient"] for k in range(8)) >= 5
    assert_mean(net, list(range(8)))
