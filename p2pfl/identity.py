"""Ed25519 identity: one 32-byte seed is both the libp2p peer ID and the message-signing key.

Peer IDs are computed here without importing libp2p (its import costs about a second), following the
libp2p peer-ID spec for Ed25519 keys:
``base58btc(identity-multihash(protobuf(PublicKey{Type=Ed25519, Data})))``,
which yields the familiar ``12D3KooW...`` strings. The test suite checks the result against libp2p's own
``ID`` class, so the two can never drift apart unnoticed.

Key files are small text files (see ``docs/wire-format.md``, "Key files") written atomically with mode 0600.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import secrets
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nacl.exceptions
import nacl.signing

from p2pfl.errors import IdentityError
from p2pfl.fsutil import fsync_dir, write_temp

if TYPE_CHECKING:
    from libp2p.crypto.keys import KeyPair

SEED_SIZE = 32
SIGNATURE_SIZE = 64
PUBLIC_KEY_SIZE = 32

KEY_FILE_MAGIC = "p2pfl-key-v1"
_KEY_FILE_MAX = 4096

# protobuf PublicKey{Type: Ed25519 (1), Data: 32 bytes}: field 1 varint = 1, field 2 bytes of length 32.
_PB_ED25519_PREFIX = b"\x08\x01\x12\x20"
# identity multihash: code 0x00, length 36 (4 bytes of protobuf framing + 32 bytes of key).
_MH_IDENTITY_PREFIX = b"\x00\x24"
_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}


def _b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, rem = divmod(n, 58)
        out.append(_B58_ALPHABET[rem])
    pad = len(data) - len(data.lstrip(b"\x00"))
    return "1" * pad + "".join(reversed(out))


def _b58decode(text: str) -> bytes:
    n = 0
    for ch in text:
        idx = _B58_INDEX.get(ch)
        if idx is None:
            raise IdentityError(f"peer id {text!r} is not base58: bad character {ch!r}")
        n = n * 58 + idx
    pad = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\x00" * pad + body


def peer_id_from_public_key(public_key: bytes) -> str:
    """The libp2p peer ID string (``12D3KooW...``) of a raw 32-byte Ed25519 public key."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise IdentityError(f"an Ed25519 public key has {PUBLIC_KEY_SIZE} bytes, got {len(public_key)}")
    return _b58encode(_MH_IDENTITY_PREFIX + _PB_ED25519_PREFIX + public_key)


def public_key_from_peer_id(peer_id: str) -> bytes:
    """Recover the raw Ed25519 public key embedded in an Ed25519 peer ID.

    Only Ed25519 peer IDs embed their key (RSA and secp256k1 IDs are hashes), so only they can be verified
    from the ID alone; p2pfl accepts nothing else.
    """
    if not isinstance(peer_id, str) or not 40 <= len(peer_id) <= 64:
        raise IdentityError(
            f"{peer_id!r} is not an Ed25519 peer id (expected a 52-character 12D3KooW... string)"
        )
    return _key_of_peer_id(peer_id)


@functools.lru_cache(maxsize=4096)
def _key_of_peer_id(peer_id: str) -> bytes:
    """Cached: every envelope names its sender, and base58 in pure Python cost more than the signature check
    (two decodes and two encodes per envelope were 38% of ``open_envelope``); a peer hears from few senders.
    Only valid ids are cached (a refusal raises), so the cache holds at most 4096 real keys."""
    raw = _b58decode(peer_id)
    prefix = _MH_IDENTITY_PREFIX + _PB_ED25519_PREFIX
    if len(raw) != len(prefix) + PUBLIC_KEY_SIZE or not raw.startswith(prefix):
        raise IdentityError(f"{peer_id!r} is not an Ed25519 peer id: p2pfl needs keys embedded in the id")
    key = raw[len(prefix) :]
    if _b58encode(raw) != peer_id:  # reject non-canonical spellings (e.g. extra leading '1's)
        raise IdentityError(f"{peer_id!r} is not a canonical base58 peer id")
    return key


#: successful verifications remembered process-wide (:func:`verify`)
VERIFIED_MEMO_SIZE = 16384


class _VerifiedMemo:
    """A bounded LRU of the 32-byte BLAKE2b digests of verified (key, signature, message) triples. Digests,
    not the bytes (as ``functools.lru_cache`` would keep): a full memo holds ~3 MB whatever the messages' size
    (keeping the bytes tripled a full registry's memory). ``cache_info``/``cache_clear`` as lru_cache's."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._keys: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def seen(self, key: bytes) -> bool:
        with self._lock:
            if key in self._keys:
                self._keys.move_to_end(key)
                self.hits += 1
                return True
            self.misses += 1
            return False

    def add(self, key: bytes) -> None:
        with self._lock:
            self._keys[key] = None
            while len(self._keys) > self.maxsize:
                self._keys.popitem(last=False)

    def cache_info(self) -> functools._CacheInfo:
        with self._lock:
            return functools._CacheInfo(self.hits, self.misses, self.maxsize, len(self._keys))

    def cache_clear(self) -> None:
        with self._lock:
            self._keys.clear()
            self.hits = self.misses = 0


_verified = _VerifiedMemo(VERIFIED_MEMO_SIZE)


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Check an Ed25519 signature; never raises for malformed inputs, returns False instead.

    A signature that verified is remembered by the digest of the exact (key, signature, message) bytes (key
    and signature have fixed sizes, so the concatenation is unambiguous) in a bounded process-wide LRU:
    verification is deterministic, so a hit is the answer a fresh check would give. Every receiver of a
    gossiped version verifies the same envelope (6+ peers of one memory-engine process; a real peer's
    duplicates and relayed copies). Failures are not remembered, so forged signatures are checked every time
    and cannot evict verified entries.
    """
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    h = hashlib.blake2b(bytes(public_key), digest_size=32)
    h.update(bytes(signature))
    h.update(message)
    key = h.digest()
    if _verified.seen(key):
        return True
    try:
        nacl.signing.VerifyKey(bytes(public_key)).verify(bytes(message), bytes(signature))
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, nacl.exceptions.TypeError):
        return False
    _verified.add(key)
    return True


@dataclass(frozen=True)
class Identity:
    """A peer's secret identity. ``repr`` never shows the seed."""

    seed: bytes = field(repr=False)
    _signing_key: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)
    public_key: bytes = field(init=False)
    peer_id: str = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.seed, bytes) or len(self.seed) != SEED_SIZE:
            raise IdentityError(f"an Ed25519 seed has exactly {SEED_SIZE} bytes")
        sk = nacl.signing.SigningKey(self.seed)
        pk = bytes(sk.verify_key)
        object.__setattr__(self, "_signing_key", sk)
        object.__setattr__(self, "public_key", pk)
        object.__setattr__(self, "peer_id", peer_id_from_public_key(pk))

    @classmethod
    def generate(cls) -> Identity:
        return cls(secrets.token_bytes(SEED_SIZE))

    def sign(self, message: bytes) -> bytes:
        """64-byte detached Ed25519 signature of ``message``."""
        return bytes(self._signing_key.sign(message).signature)

    def secret_for(self, purpose: bytes) -> bytes:
        """8 bytes derived from the seed for one ``purpose`` (a personalisation of at most 16 bytes): a
        peer's private randomness (its buckets, its link rotation) that no neighbour can predict and a
        simulated run repeats. Different purposes give independent values, and none reveals the seed."""
        return hashlib.blake2b(self.seed, digest_size=8, person=purpose).digest()

    def libp2p_keypair(self) -> KeyPair:
        """The same key as a libp2p ``KeyPair`` (imports libp2p lazily: it is slow to import)."""
        from libp2p.crypto.ed25519 import create_new_key_pair

        return create_new_key_pair(self.seed)


def _format_key_file(identity: Identity) -> bytes:
    return (
        f"# p2pfl identity key: keep this file secret (mode 0600).\n"
        f"# peer id: {identity.peer_id}\n"
        f"{KEY_FILE_MAGIC} ed25519 {identity.seed.hex()}\n"
    ).encode("ascii")


def save_key(identity: Identity, path: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Write ``identity`` to ``path`` atomically with mode 0600.

    The file is written to a temporary name in the same directory, fsynced, then linked into place
    (refusing if ``path`` exists, with no check-then-write race) or, with ``force``, renamed over it. A crash
    leaves either the old key or the new one, never a partial file.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise IdentityError(f"cannot write key file {target}: directory {directory} does not exist")
    if target.exists() and not force:
        raise IdentityError(
            f"key file {target} already exists; refusing to overwrite it (use --force to replace it)"
        )
    try:
        tmp = write_temp(directory, target.name, _format_key_file(identity))
    except OSError as exc:
        raise IdentityError(f"cannot write key file {target}: {exc.strerror or exc}") from exc
    try:
        if force:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)  # refuses if target exists: no check-then-write race
            except FileExistsError:
                raise IdentityError(
                    f"key file {target} already exists; refusing to overwrite it (use --force to replace it)"
                ) from None
    except OSError as exc:
        raise IdentityError(f"cannot write key file {target}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(directory)
    return target


def load_key(path: str | os.PathLike[str]) -> Identity:
    """Read a key file written by :func:`save_key`, refusing unsafe permissions and malformed content."""
    target = Path(path)
    try:
        st = target.stat()
    except FileNotFoundError:
        raise IdentityError(
            f"key file {target} does not exist (create one with `p2pfl keygen --out {target}`)"
        ) from None
    except OSError as exc:
        raise IdentityError(f"cannot read key file {target}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise IdentityError(f"key file {target} is not a regular file")
    if os.name == "posix" and st.st_mode & 0o077:
        raise IdentityError(
            f"key file {target} is accessible by group/others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run `chmod 600 {target}`"
        )
    if st.st_size > _KEY_FILE_MAX:
        raise IdentityError(f"key file {target} is {st.st_size} bytes: too large to be a p2pfl key file")
    try:
        text = target.read_bytes().decode("ascii")
    except UnicodeDecodeError:
        raise IdentityError(f"key file {target} is not a p2pfl key file (not ASCII text)") from None
    except OSError as exc:
        raise IdentityError(f"cannot read key file {target}: {exc.strerror or exc}") from exc
    return _parse_key_text(text, str(target))


def _parse_key_text(text: str, where: str) -> Identity:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if len(lines) != 1:
        raise IdentityError(
            f"key file {where} is not a p2pfl key file (expected one '{KEY_FILE_MAGIC}' line)"
        )
    parts = lines[0].split()
    if len(parts) != 3 or parts[0] != KEY_FILE_MAGIC:
        raise IdentityError(
            f"key file {where} is not a p2pfl key file (expected '{KEY_FILE_MAGIC} ed25519 <hex>')"
        )
    if parts[1] != "ed25519":
        raise IdentityError(f"key file {where} has key type {parts[1]!r}; only ed25519 is supported")
    hex_seed = parts[2]
    if len(hex_seed) != 2 * SEED_SIZE:
        raise IdentityError(
            f"key file {where} is truncated or corrupt: seed has {len(hex_seed)} hex digits,"
            f" expected {2 * SEED_SIZE}"
        )
    try:
        seed = bytes.fromhex(hex_seed)
    except ValueError:
        raise IdentityError(f"key file {where} is corrupt: the seed is not hexadecimal") from None
    return Identity(seed)


def load_or_create_key(path: str | os.PathLike[str]) -> tuple[Identity, bool]:
    """Load the key at ``path``, or create it if absent. Returns ``(identity, created)``."""
    target = Path(path)
    if target.exists():
        return load_key(target), False
    identity = Identity.generate()
    try:
        save_key(identity, target)
    except IdentityError:
        if target.exists():  # another process created it first: use theirs
            return load_key(target), False
        raise
    return identity, True


def describe(identity: Identity) -> dict[str, Any]:
    """Public facts about an identity, safe to print or log."""
    return {"peer_id": identity.peer_id, "public_key": identity.public_key.hex()}
