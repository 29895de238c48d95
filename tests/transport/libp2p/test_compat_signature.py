"""compat_cpu.signature_validator: pubsub's message signature check with the sender's key remembered gives
py-libp2p's own answer for valid, tampered, mis-attributed, unsigned and foreign-key messages, and still
verifies the signature of every message (only the key derivation is remembered)."""

from __future__ import annotations

import libp2p.pubsub.pubsub as pubsub_module
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.rsa import create_new_key_pair as rsa_key_pair
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX

from p2pfl.transport.libp2p import compat_cpu

ALICE, BOB = create_new_key_pair(b"a" * 32), create_new_key_pair(b"b" * 32)


def _signed(
    pair: object, data: bytes, seqno: int = 1, topic: str = "t", *, claim: object = None
) -> rpc_pb2.Message:
    """A message signed by ``pair`` as pubsub signs its own, claiming to be ``claim`` (default: itself)."""
    sender = ID.from_pubkey((claim or pair).public_key)  # type: ignore[attr-defined]
    msg = rpc_pb2.Message(
        data=data, topicIDs=[topic], from_id=sender.to_bytes(), seqno=seqno.to_bytes(8, "big")
    )
    msg.signature = pair.private_key.sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())  # type: ignore[attr-defined]
    msg.key = pair.public_key.serialize()  # type: ignore[attr-defined]
    return msg


def _variants(data: bytes, flip: int) -> list[rpc_pb2.Message]:
    good = _signed(ALICE, data)
    tampered = rpc_pb2.Message()
    tampered.CopyFrom(good)
    tampered.data = bytes(data[:flip]) + bytes([data[flip] ^ 1]) + bytes(data[flip + 1 :]) if data else b"x"
    bad_sig = rpc_pb2.Message()
    bad_sig.CopyFrom(good)
    sig = bytearray(good.signature)
    sig[flip % len(sig)] ^= 1
    bad_sig.signature = bytes(sig)
    unsigned = rpc_pb2.Message()
    unsigned.CopyFrom(good)
    unsigned.ClearField("signature")
    short_sig = rpc_pb2.Message()
    short_sig.CopyFrom(good)
    short_sig.signature = good.signature[:7]
    garbage_id = rpc_pb2.Message()
    garbage_id.CopyFrom(good)
    garbage_id.from_id = bytes([flip % 256]) * 5
    return [
        good,
        _signed(BOB, data, seqno=2),
        _signed(BOB, data, claim=ALICE),  # Bob signs as Alice
        tampered,
        bad_sig,
        unsigned,
        short_sig,
        garbage_id,
    ]


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(0, 10_000))
def test_every_variant_gets_the_librarys_answer(data: bytes, flip: int) -> None:
    flip %= len(data)
    for _ in range(2):  # first with the key derived, then remembered
        for msg in _variants(data, flip):
            assert compat_cpu.signature_validator(msg) == compat_cpu.original_signature_validator(msg)
    assert compat_cpu.signature_validator(_signed(ALICE, data))
    assert not compat_cpu.signature_validator(_signed(BOB, data, claim=ALICE))


def test_a_key_carried_in_the_message_takes_the_librarys_path() -> None:
    """An RSA key is too long for an identity multihash: its peer id is a hash, the key is in ``msg.key``."""
    pair = rsa_key_pair()
    msg = _signed(pair, b"payload")
    assert compat_cpu._sender_key(bytes(msg.from_id)) is None
    assert compat_cpu.signature_validator(msg) and compat_cpu.original_signature_validator(msg)
    msg.data = b"tampered"
    assert not compat_cpu.signature_validator(msg) and not compat_cpu.original_signature_validator(msg)


def test_the_signature_is_verified_on_every_message_only_the_key_is_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compat_cpu._sender_key.cache_clear()
    derived: list[bytes] = []
    inner = ID.extract_public_key

    def counting(self: ID) -> object:
        derived.append(self.to_bytes())
        return inner(self)

    monkeypatch.setattr(ID, "extract_public_key", counting)
    msgs = [_signed(ALICE, b"m%d" % i, seqno=i) for i in range(5)]
    forged = rpc_pb2.Message()
    forged.CopyFrom(msgs[0])
    forged.data = b"forged"
    assert all(compat_cpu.signature_validator(m) for m in msgs)
    assert not compat_cpu.signature_validator(forged)
    assert len(derived) == 1


def test_pubsub_checks_through_the_shortcut() -> None:
    assert pubsub_module.signature_validator is compat_cpu.signature_validator
