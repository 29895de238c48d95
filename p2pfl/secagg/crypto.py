"""The primitives: X25519 keys from Ed25519 identities, key agreement, seed derivation and the mask PRG.

* Each member's long-term X25519 key is derived from its Ed25519 identity (libsodium's
  ``crypto_sign_ed25519_*_to_curve25519``); it only encrypts share messages (nacl ``Box``), so the peer id a
  member already knows is all it needs to encrypt to another member.
* The pairwise-mask keys are fresh X25519 pairs per round, advertised signed by the identity: reconstructing a
  dropped member's mask key (dropout recovery) must not reveal anything long-lived.
* Seeds are derived HKDF-SHA256 style (extract with a context salt, expand with a label), so the same pair
  of keys gives unrelated seeds in another group or round.
* The PRG is SHAKE-256 (a standard extendable-output function) read as little-endian uint32: deterministic,
  identical on every platform, and its output is indistinguishable from uniform without the seed.
"""

from __future__ import annotations

import hashlib
import hmac

import nacl.bindings
import nacl.public
import numpy as np

from p2pfl.identity import Identity, public_key_from_peer_id
from p2pfl.secagg.errors import SecAggError
from p2pfl.secagg.fixedpoint import Ring

KEY_SIZE = 32
SEED_SIZE = 32
_LABEL = b"p2pfl-secagg/1"


def identity_box_key(identity: Identity) -> nacl.public.PrivateKey:
    """The X25519 private key derived from an Ed25519 identity (for encrypting share messages)."""
    sk = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(identity.seed + identity.public_key)
    return nacl.public.PrivateKey(sk)


def peer_box_key(peer_id: str) -> nacl.public.PublicKey:
    """The X25519 public key of a peer id (raises ``IdentityError`` for a non-Ed25519 id, ``SecAggError``
    for a key libsodium refuses to convert)."""
    try:
        pk = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(public_key_from_peer_id(peer_id))
    except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError, nacl.exceptions.TypeError) as exc:
        raise SecAggError("weak_key", f"{peer_id}: not convertible to X25519 ({exc})") from None
    return nacl.public.PublicKey(pk)


def mask_keypair(secret: bytes) -> tuple[bytes, bytes]:
    """A round's mask key pair ``(sk, pk)`` from 32 random bytes."""
    if len(secret) != KEY_SIZE:
        raise SecAggError("malformed", f"a mask key has {KEY_SIZE} bytes, got {len(secret)}")
    sk = nacl.public.PrivateKey(secret)
    return bytes(sk), bytes(sk.public_key)


def mask_public(secret: bytes) -> bytes:
    return mask_keypair(secret)[1]


def agree(secret: bytes, public: bytes) -> bytes:
    """The raw X25519 shared secret; ``SecAggError('weak_key')`` for a small-order public key."""
    if len(secret) != KEY_SIZE or len(public) != KEY_SIZE:
        raise SecAggError("malformed", "X25519 keys have 32 bytes")
    try:
        shared = nacl.bindings.crypto_scalarmult(secret, public)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError, nacl.exceptions.TypeError):
        raise SecAggError("weak_key", "X25519 refused the public key") from None
    if not any(shared):
        raise SecAggError("weak_key", "the public key has small order (all-zero shared secret)")
    return bytes(shared)


def derive(key_material: bytes, context: bytes, label: bytes, size: int = SEED_SIZE) -> bytes:
    """HKDF-SHA256 (RFC 5869) with ``context`` as salt and ``label`` as info."""
    prk = hmac.new(hashlib.sha256(_LABEL + context).digest(), key_material, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < size:
        block = hmac.new(prk, block + _LABEL + label + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:size]


def pair_seed(secret: bytes, public: bytes, context: bytes, a: str, b: str) -> bytes:
    """The pairwise mask seed of members ``a`` and ``b`` (either end computes the same bytes)."""
    lo, hi = sorted((a, b))
    return derive(agree(secret, public), context, b"pair|" + lo.encode() + b"|" + hi.encode())


def prg(seed: bytes, size: int) -> Ring:
    """``size`` ring elements expanded from ``seed`` (SHAKE-256, little-endian uint32)."""
    if len(seed) != SEED_SIZE:
        raise SecAggError("malformed", f"a PRG seed has {SEED_SIZE} bytes")
    return np.frombuffer(hashlib.shake_256(seed).digest(4 * size), dtype="<u4").astype(np.uint32)


def commit(secret: bytes, context: bytes, what: bytes) -> bytes:
    """A hiding, binding commitment to a 32-byte random secret (it is checked after reconstruction)."""
    return hashlib.sha256(_LABEL + b"|commit|" + what + b"|" + context + b"|" + secret).digest()
