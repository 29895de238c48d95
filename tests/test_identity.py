from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings

from p2pfl.errors import IdentityError
from p2pfl.identity import (
    Identity,
    load_key,
    load_or_create_key,
    peer_id_from_public_key,
    public_key_from_peer_id,
    save_key,
    verify,
)
from tests.strategies import seeds


@settings(max_examples=25, deadline=None)
@given(seeds)
def test_peer_id_matches_libp2p_for_the_same_seed(seed: bytes) -> None:
    from libp2p.peer.id import ID

    identity = Identity(seed)
    expected = ID.from_pubkey(identity.libp2p_keypair().public_key).to_base58()
    assert expected == identity.peer_id
    assert identity.peer_id.startswith("12D3KooW")


def test_libp2p_keypair_signs_with_the_same_key(alice: Identity) -> None:
    msg = b"one seed, two roles"
    sig = alice.libp2p_keypair().private_key.sign(msg)
    assert verify(alice.public_key, msg, sig)


@settings(max_examples=50, deadline=None)
@given(seeds)
def test_public_key_round_trips_through_peer_id(seed: bytes) -> None:
    identity = Identity(seed)
    assert identity.public_key == public_key_from_peer_id(identity.peer_id)
    assert identity.peer_id == peer_id_from_public_key(identity.public_key)


@pytest.mark.parametrize(
    "bad",
    ["", "hello", "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N", "12D3KooW" + "0" * 44, "1" + "x" * 51],
)
def test_non_ed25519_or_malformed_peer_ids_are_refused(bad: str) -> None:
    with pytest.raises(IdentityError):
        public_key_from_peer_id(bad)


def test_sign_and_verify(alice: Identity, bob: Identity) -> None:
    sig = alice.sign(b"msg")
    assert verify(alice.public_key, b"msg", sig)
    assert not verify(bob.public_key, b"msg", sig)
    assert not verify(alice.public_key, b"msh", sig)
    assert not verify(alice.public_key, b"msg", sig[:-1])


def test_repr_never_shows_the_seed(alice: Identity) -> None:
    assert alice.seed.hex() not in repr(alice)
    assert repr(alice.seed) not in repr(alice)


def test_seed_must_be_32_bytes() -> None:
    with pytest.raises(IdentityError):
        Identity(b"short")


def test_saved_key_loads_back_with_mode_0600(tmp_path: Path, alice: Identity) -> None:
    path = save_key(alice, tmp_path / "k")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert alice == load_key(path)
    assert [p.name for p in tmp_path.iterdir()] == ["k"]  # no temp file left behind


def test_save_refuses_to_overwrite_unless_forced(tmp_path: Path, alice: Identity, bob: Identity) -> None:
    path = save_key(alice, tmp_path / "k")
    with pytest.raises(IdentityError, match="already exists"):
        save_key(bob, path)
    assert alice == load_key(path)
    save_key(bob, path, force=True)
    assert bob == load_key(path)


def test_save_into_missing_directory_fails_clearly(tmp_path: Path, alice: Identity) -> None:
    with pytest.raises(IdentityError, match="does not exist"):
        save_key(alice, tmp_path / "nope" / "k")


@pytest.mark.skipif(os.name != "posix", reason="permission bits are POSIX-only")
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_load_refuses_keys_readable_by_others(tmp_path: Path, alice: Identity, mode: int) -> None:
    path = save_key(alice, tmp_path / "k")
    path.chmod(mode)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_key(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a p2pfl key file"),
        (b"p2pfl-key-v1 ed25519 0011", "truncated"),
        (b"p2pfl-key-v1 rsa " + b"00" * 32, "only ed25519"),
        (b"p2pfl-key-v1 ed25519 " + b"zz" * 32, "not hexadecimal"),
        (b"-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n", "not a p2pfl key file"),
        (b"\xff\xfe binary", "not ASCII"),
        (b"x" * 5000, "too large"),
    ],
)
def test_load_rejects_malformed_key_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "k"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(IdentityError, match=message):
        load_key(path)


def test_truncating_a_real_key_file_is_detected(tmp_path: Path, alice: Identity) -> None:
    path = save_key(alice, tmp_path / "k")
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(IdentityError, match="truncated"):
        load_key(path)


def test_missing_key_file_suggests_keygen(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="p2pfl keygen"):
        load_key(tmp_path / "absent")


def test_load_or_create_creates_once(tmp_path: Path) -> None:
    first, created = load_or_create_key(tmp_path / "k")
    second, created_again = load_or_create_key(tmp_path / "k")
    assert (created, created_again) == (True, False)
    assert first == second


def test_secrets_for_different_purposes_are_independent_and_repeat() -> None:
    """A peer's private randomness (buckets, link rotation) is keyed per purpose by its seed."""
    a, b = Identity(bytes([7]) * 32), Identity(bytes([8]) * 32)
    assert a.secret_for(b"p2pfl-buckets") == Identity(bytes([7]) * 32).secret_for(b"p2pfl-buckets")
    assert a.secret_for(b"p2pfl-buckets") != a.secret_for(b"p2pfl-rotation")
    assert a.secret_for(b"p2pfl-rotation") != b.secret_for(b"p2pfl-rotation")
    assert len(a.secret_for(b"x")) == 8 and a.secret_for(b"x") not in a.seed
