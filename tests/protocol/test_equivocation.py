"""Equivocation as evidence, replay attribution, and rate limits before the signature check (engine level,
fake clock: ``now`` is passed in)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import p2pfl.wire.envelope as envelope_module
from p2pfl.identity import Identity
from p2pfl.protocol import Evict, FetchPayload, GossipEngine, ProtocolConfig, Publish, PublishProof
from p2pfl.wire import SIGNING_DOMAIN, Header, encode_header, open_envelope, seal
from p2pfl.wire.proof import SignedHeader, encode_proof, make_proof

from .test_engine import engine, model, train_step


def publish(e: GossipEngine, delta: float, now: float) -> bytes:
    out = e.finish_round(train_step(e, delta), now).actions[0]
    assert isinstance(out, Publish)
    return out.envelope


def twins(i: int = 1) -> tuple[GossipEngine, GossipEngine]:
    """Two engines with one identity: an equivocator's two faces."""
    return engine(i), engine(i)


def equivocate(i: int = 1) -> tuple[str, bytes, bytes]:
    """(sender, two validly signed seq-1 deltas of different models)."""
    a, twin = twins(i)
    return a.peer_id, publish(a, 1.0, 1), publish(twin, 2.0, 1)


def signed_of(env: bytes) -> SignedHeader:
    e = open_envelope(env)
    return SignedHeader(e.header_bytes, e.signature)


def test_the_observer_convicts_and_relays_the_proof_once() -> None:
    sender, first, second = equivocate()
    b = engine(2)
    assert b.accept_gossip(first, sender, 1.0)
    b.handle_announce(first, sender, 1.0)
    assert b.accept_gossip(second, sender, 1.0)  # the relay of the second copy is not penalised
    actions = b.handle_announce(second, sender, 1.0)
    assert Evict(sender, "equivocation") in actions
    [relay] = [a for a in actions if isinstance(a, PublishProof)]
    assert sender == relay.sender and b.is_evicted(sender)
    assert 1 == b.rejections["equivocation"] and sender in b.status()["evicted"]
    # further messages of the convicted sender are refused before their signature is checked
    assert not b.accept_gossip(first, sender, 2.0)
    assert 1 == b.rejections["evicted"]


def test_a_gossiped_proof_convicts_every_verifier_and_each_relays_it_once() -> None:
    sender, first, second = equivocate()
    proof = encode_proof(make_proof(signed_of(first), signed_of(second)))
    c, d = engine(3), engine(4)
    assert c.accept_gossip(proof, "relay", 1.0)
    actions = c.handle_announce(proof, "relay", 1.0)
    assert [Evict(sender, "equivocation"), PublishProof(proof, sender)] == actions
    # the same proof again (another relay's copy): nothing more, not even a verify
    assert c.accept_gossip(proof, "relay2", 1.0)
    assert [] == c.handle_announce(proof, "relay2", 1.0)
    # c relays, d verifies c's copy and convicts too; no relay is blamed for anything
    assert d.accept_gossip(proof, c.peer_id, 1.5)
    assert Evict(sender, "equivocation") in d.handle_announce(proof, c.peer_id, 1.5)
    assert {sender} == set(c.rejections_by_peer) == set(d.rejections_by_peer)
    # a second, different proof against the same sender convicts nothing new and is not relayed again
    a, twin = twins()
    for r in (1, 2):
        publish(a, 1.0, r)
        publish(twin, 2.0, r)
    e2a, e2b = publish(a, 1.0, 3), publish(twin, 3.0, 3)
    proof2 = encode_proof(make_proof(signed_of(e2a), signed_of(e2b)))
    assert c.accept_gossip(proof2, "relay", 2.0)
    assert [] == c.handle_announce(proof2, "relay", 2.0)
    assert 1 == c.proofs.relayed


def _forged_proofs() -> dict[str, bytes]:
    a = Identity(bytes([1]) * 32)
    attacker = Identity(bytes([9]) * 32)
    ea = engine(1)
    honest1, honest2 = publish(ea, 1.0, 1), publish(ea, 1.0, 2)
    h1 = open_envelope(honest1)
    # a header claiming honest a's version 1 with another model, signed by the attacker (a frame-up)
    framed_hb = encode_header(replace(h1.header, result=bytes(32)))
    framed = SignedHeader(framed_hb, attacker.sign(SIGNING_DOMAIN + framed_hb))
    eb = engine(2)
    other_sender = signed_of(publish(eb, 5.0, 1))
    assert a.peer_id == h1.header.sender
    resigned = open_envelope(ea.serve_snapshot(7))  # the same model as version 2, signed again later
    return {
        "one_bad_signature": encode_proof(make_proof(signed_of(honest1), framed)),
        "two_senders": encode_proof(make_proof(signed_of(honest1), other_sender)),
        "same_digest_twice": encode_proof(
            make_proof(signed_of(honest2), SignedHeader(resigned.header_bytes, resigned.signature))
        ),
        "replayed_honest_pair": encode_proof(make_proof(signed_of(honest1), signed_of(honest2))),
        "garbage": b"\x95\xc0\xc0\xc0\xc0\xc0",
    }


@pytest.mark.parametrize("kind", sorted(_forged_proofs()))
def test_a_forged_proof_is_refused_counted_and_bans_no_one(kind: str) -> None:
    proof = _forged_proofs()[kind]
    c = engine(3)
    assert not c.accept_gossip(proof, "forger", 1.0)
    assert [] == c.handle_announce(proof, "forger", 1.0)  # delivered anyway (a transport without validator)
    assert 2 == c.rejections["bad_proof"] == c.rejections_by_peer["forger"]["bad_proof"]
    assert [] == c.status()["evicted"] and not c.bans.convicted_peers()


def test_proofs_per_forwarder_are_rate_limited_before_verifying() -> None:
    c = engine(3)
    forged = _forged_proofs()["one_bad_signature"]
    results = [c.accept_gossip(forged, "forger", 1.0) for _ in range(50)]
    assert not any(results)
    limit = int(c.rates.cfg.proof_burst)
    assert limit == c.rejections["bad_proof"]
    assert 50 - limit == c.rejections["proof_rate_limited"]


def test_replays_are_attributed_to_their_signer_never_to_the_relay() -> None:
    a, b, relay = engine(1), engine(2), engine(3)
    first = publish(a, 1.0, 1)
    b.handle_announce(first, a.peer_id, 1.0)  # (the snapshot request is not answered here)
    second = publish(a, 1.0, 2)
    b.handle_snapshot(a.serve_snapshot(0), a.peer_id, 2.0)  # b holds version 2
    b.handle_announce(second, a.peer_id, 2.0)  # a harmless duplicate
    # an honest relay forwards a's old version 1 again (it cannot tell it from a fresh one)
    b.handle_announce(first, relay.peer_id, 3.0)
    # ... and b's own old announcement, relayed back to it
    own = publish(b, 1.0, 3)
    b.handle_announce(own, relay.peer_id, 4.0)
    assert 2 == b.rejections["replay"]
    assert relay.peer_id not in b.rejections_by_peer
    assert {"replay": 1} == dict(b.rejections_by_peer[a.peer_id])


def _header_only(identity: Identity, base: bytes, arch: bytes, size: int, *, seq: int, n: int) -> Header:
    return Header(
        kind="delta",
        network_id="t",
        sender=identity.peer_id,
        seq=seq,
        base=base,
        result=n.to_bytes(32, "big"),
        arch=arch,
        payload_digest=(n + 1).to_bytes(32, "big"),
        payload_size=size,
    )


@pytest.fixture
def verifies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the Ed25519 verifies of envelopes."""
    count = [0]
    real = envelope_module.verify

    def counting(*args: object) -> bool:
        count[0] += 1
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(envelope_module, "verify", counting)
    return count


def _flood(b: GossipEngine, attacker: Identity, *, same_seq: bool, n: int = 10_000) -> tuple[int, int]:
    """Deliver ``n`` validly signed header-only announcements of ``attacker`` within 1 s of fake time.
    Returns (accepted by the validator, fetches started)."""
    rep_seq = b.replicas[attacker.peer_id].seq
    base = b.replicas[attacker.peer_id].digest
    size = b._payload_sizes["raw"]
    accepted = fetches = 0
    for i in range(n):
        seq = rep_seq + 1 if same_seq else rep_seq + 1 + i
        data = seal(attacker, _header_only(attacker, base, b.layout.arch, size, seq=seq, n=i), None)
        now = 10.0 + i / n
        if b.accept_gossip(data, attacker.peer_id, now):
            accepted += 1
            actions = b.handle_announce(data, attacker.peer_id, now)
            fetches += sum(isinstance(x, FetchPayload) for x in actions)
    return accepted, fetches


def _with_replica_of(attacker: Identity) -> GossipEngine:
    x = GossipEngine(attacker, ProtocolConfig(network_id="t"), model())
    b = engine(2)
    b.handle_snapshot(x.serve_snapshot(0), x.peer_id, 1.0)
    assert x.peer_id in b.replicas
    return b


def test_an_announcement_flood_of_one_version_convicts_and_costs_one_fetch(verifies: list[int]) -> None:
    attacker = Identity(bytes([9]) * 32)
    b = _with_replica_of(attacker)
    verifies[0] = 0
    accepted, fetches = _flood(b, attacker, same_seq=True)
    assert 1 == fetches  # the first; the second is the proof
    assert b.bans.convicted(attacker.peer_id) == "equivocation"
    assert verifies[0] <= 3  # everything after the conviction is refused before its signature is checked
    assert accepted == 2


def test_an_announcement_flood_of_many_versions_is_rate_limited_before_verifying(verifies: list[int]) -> None:
    attacker = Identity(bytes([9]) * 32)
    b = _with_replica_of(attacker)
    verifies[0] = 0
    accepted, fetches = _flood(b, attacker, same_seq=False)
    cfg = b.rates.cfg
    allowed = cfg.sender_burst + cfg.sender_rate * 1.0
    assert accepted <= allowed and verifies[0] <= allowed + 1
    assert fetches <= 1 and b.snapshot_requests <= accepted  # the first is the next version: fetched
    # its own topic: the flooder is also the relay, so both of its buckets run dry
    assert 10_000 - accepted == b.rejections["rate_limited"] + b.rejections["rate_limited_relay"]
    assert {"rate_limited", "rate_limited_relay"} == set(b.rejections_by_peer[attacker.peer_id])


def test_forged_claims_cannot_spend_an_honest_senders_tokens(verifies: list[int]) -> None:
    """The adaptive attacker writes honest a's id into its headers (it cannot sign them): the relay bucket
    bounds the verifies it causes, and a's own announcements still pass."""
    a = engine(1)
    attacker = Identity(bytes([9]) * 32)
    b = engine(2)
    b.handle_snapshot(a.serve_snapshot(0), a.peer_id, 1.0)
    size = b._payload_sizes["raw"]
    verifies[0] = 0
    refused = 0
    for i in range(5_000):
        h = _header_only(a.identity, a.public_digest, b.layout.arch, size, seq=1 + i, n=i)
        forged = seal(a.identity, h, None)
        forged = forged[:-65] + bytes(64) + forged[-1:]  # zero the signature (the 64 bytes before the nil)
        refused += not b.accept_gossip(forged, attacker.peer_id, 5.0 + i / 5_000)
    assert 5_000 == refused
    cfg = b.rates.cfg
    assert verifies[0] <= cfg.relay_burst + cfg.relay_rate
    assert b.rejections["rate_limited_relay"] >= 5_000 - cfg.relay_burst - cfg.relay_rate
    assert 0 == b.rejections["rate_limited"]
    genuine = publish(a, 1.0, 7)
    assert b.accept_gossip(genuine, a.peer_id, 7.0)
    b.handle_announce(genuine, a.peer_id, 7.0)
    assert np.array_equal(a.public, b.replicas[a.peer_id].vec)


def test_honest_rates_are_never_limited() -> None:
    a, b = engine(1), engine(2)
    b.handle_snapshot(a.serve_snapshot(0), a.peer_id, 0.0)
    for r in range(1, 200):  # 10 rounds a second for 20 s: far faster than any training round
        env = publish(a, 0.1, r / 10)
        assert b.accept_gossip(env, a.peer_id, r / 10)
        b.handle_announce(env, a.peer_id, r / 10)
    assert 199 == b.replicas[a.peer_id].seq and not b.rejections


def test_a_conviction_met_while_joining_from_snapshots_yields_the_evict_and_the_proof() -> None:
    a, twin = twins()
    first = publish(a, 1.0, 1)
    publish(twin, 2.0, 1)  # the twin's version 1 is another model: its snapshot contradicts `first`
    b = engine(2)
    b.handle_announce(first, a.peer_id, 1.0)  # b saw (and kept) a's header of version 1
    assert [] == b.take_actions()
    assert 0 == b.join_from_snapshots({a.peer_id: twin.serve_snapshot(0)}, 2.0)
    actions = b.take_actions()
    assert Evict(a.peer_id, "equivocation") in actions  # the transport disconnects a at once
    assert [a.peer_id] == [x.sender for x in actions if isinstance(x, PublishProof)]
    assert b.is_evicted(a.peer_id) and [] == b.take_actions()


def test_the_early_gate_admits_a_flooding_sender_only_while_its_bucket_has_tokens() -> None:
    """What a transport asks before its own per-message work: a sender whose verified messages emptied its
    bucket is refused (and counted) at the cost of a lookup, and an evicted one always; nothing is spent."""
    attacker = Identity(bytes([9]) * 32)
    b = _with_replica_of(attacker)
    accepted, _fetches = _flood(b, attacker, same_seq=False, n=200)
    assert accepted < 200, accepted
    assert not b.admit_sender(attacker.peer_id, 10.999), (accepted, b.rejections)
    assert b.rejections_by_peer[attacker.peer_id]["rate_limited"] > 200 - accepted
    assert b.admit_sender(attacker.peer_id, 20.0)  # refilled a while later
    assert b.admit_sender(engine(3).peer_id, 11.0)  # another sender has its own bucket
    sender, first, second = equivocate()
    b.handle_announce(first, sender, 30.0)
    b.handle_announce(second, sender, 30.0)
    assert not b.admit_sender(sender, 30.0) and not b.admit_sender(sender, 1e6)


def test_the_early_gate_bounds_what_one_publisher_makes_us_read_whatever_identities_it_claims() -> None:
    """The adaptive flooder signs each envelope with a fresh identity (every sender bucket full): the
    publisher bucket, charged per message read, still refuses its burst after ``relay_burst``."""
    b = engine(2)
    cfg = b.rates.cfg
    admitted = sum(b.admit_sender("flooder", 10.0 + i / 10_000) for i in range(10_000))
    assert cfg.relay_burst <= admitted <= cfg.relay_burst + cfg.relay_rate * 1.0
    assert 10_000 - admitted == b.rejections_by_peer["flooder"]["rate_limited_publisher"]
    # an honest publisher's own rate (a few messages a second, each copy via a few relays) never trips it
    assert all(b.admit_sender("honest", 10.0 + i * 0.05) for i in range(2_000))


def test_a_delta_signed_by_anyone_but_its_publisher_is_refused_before_its_verify(verifies: list[int]) -> None:
    """Over libp2p each peer publishes on its own topic and only its own deltas: one signed by an identity
    we know nothing of (a flood of fresh identities) is refused against the publisher."""
    a, b = engine(1), engine(2)
    env = publish(a, 1.0, 1)
    verifies[0] = 0
    assert not b.accept_gossip(env, "relay", 1.0, origin="flooder")
    assert 0 == verifies[0]
    assert {"foreign_sender": 1} == dict(b.rejections_by_peer["flooder"])
    assert b.accept_gossip(env, "relay", 1.0, origin=a.peer_id)
    assert b.accept_gossip(env, "relay", 1.0)  # a transport that does not know the publisher
    # a known peer's envelope from another origin goes on to the usual checks (replay, bad signature)
    b.handle_snapshot(a.serve_snapshot(0), a.peer_id, 2.0)
    assert b.accept_gossip(env, "relay", 3.0, origin="flooder")
    assert 1 == b.rejections["foreign_sender"]
