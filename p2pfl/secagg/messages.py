"""The five signed messages of a group round and their total decoders.

Every message is one msgpack array ``[version, kind, group, round, sender, body, signature]``: ``group`` is
the 32-byte group id (:func:`group_id`), ``sender`` the sender's peer id, ``signature`` its Ed25519
signature over the msgpack of the first six fields. An accepted message is the canonical msgpack of what
it decodes to, so a copy is recognised byte for byte. Bodies (members are named by their index in the
group's sorted member list):

==========  =========================================================  ===========================
kind        body                                                       sent
==========  =========================================================  ===========================
advertise   ``[mask_pk (32 B), commit_b (32 B)]``                      to every member
shares      ``[recipient index, nonce (24 B), Box ciphertext]``        to each member on its own
masked      ``[mask set (sorted indices), masked vector (4*dim B)]``   to every member
view        ``[survivors (sorted indices), adverts digest (32 B)]``    to every member
unmask      ``[[dealer index, "b"|"s", share (66 B), dealer sig], ..]``  to every member
==========  =========================================================  ===========================

The ``shares`` ciphertext (nacl ``Box`` from the sender's to the recipient's identity-derived X25519 key)
holds ``[share_b, sig_b, share_s, sig_s]``: each share is signed by its dealer (:func:`share_statement`),
so the holder can later reveal it to everyone and nobody can alter it on the way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import nacl.exceptions
import nacl.public

from p2pfl.errors import IdentityError
from p2pfl.identity import Identity, public_key_from_peer_id, verify
from p2pfl.secagg.errors import SecAggError
from p2pfl.secagg.shamir import SHARE_SIZE
from p2pfl.wire.canonical import _unpack
from p2pfl.wire.errors import WireError

VERSION = "p2pfl-secagg/2"  # 2: the view carries the adverts digest
KINDS = ("advertise", "shares", "masked", "view", "unmask")
NONCE_SIZE = 24
SIG_SIZE = 64
#: bytes of everything but a masked vector and the per-member lists (generous)
_FIXED_OVERHEAD = 1024
_SHARES_PLAIN = 4 + 2 * (3 + SHARE_SIZE) + 2 * (2 + SIG_SIZE)


def group_id(network_id: str, members: Sequence[str], threshold: int) -> bytes:
    """The 32-byte id of a group: its network, its sorted members and its threshold."""
    h = hashlib.sha256(b"p2pfl-secagg-group/1\x00" + network_id.encode() + b"\x00")
    for m in sorted(members):
        h.update(m.encode() + b"\x00")
    h.update(threshold.to_bytes(2, "big"))
    return h.digest()


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def adverts_digest(adverts: Sequence[tuple[int, bytes, bytes]]) -> bytes:
    """The digest of ``(member, mask_pk, commit_b)`` adverts, in member order (the ``view``'s ``adverts``)."""
    h = hashlib.sha256(b"p2pfl-secagg/adverts")
    for member, mask_pk, commit_b in sorted(adverts):
        h.update(member.to_bytes(2, "big") + mask_pk + commit_b)
    return h.digest()


def share_statement(group: bytes, round_: int, dealer: int, holder: int, *, kind: str, share: bytes) -> bytes:
    """What a dealer signs for each share it deals (so a revealed share is attributable to its dealer)."""
    return _pack(["p2pfl-secagg/share", group, round_, dealer, holder, kind, share])


@dataclass(frozen=True)
class Advertise:
    mask_pk: bytes
    commit_b: bytes


@dataclass(frozen=True)
class Shares:
    recipient: int
    nonce: bytes
    ciphertext: bytes


@dataclass(frozen=True)
class Masked:
    mask_set: tuple[int, ...]
    vector: bytes


@dataclass(frozen=True)
class View:
    survivors: tuple[int, ...]
    #: SHA-256 of the key adverts this member uses for the survivors and the dropped members
    #: (:func:`adverts_digest`): members that hold different adverts of one member fail the round here
    adverts: bytes = bytes(32)


@dataclass(frozen=True)
class Revealed:
    dealer: int
    kind: str  # "b": self-mask seed, "s": mask key
    share: bytes
    signature: bytes


@dataclass(frozen=True)
class Unmask:
    items: tuple[Revealed, ...]


Body = Advertise | Shares | Masked | View | Unmask


@dataclass(frozen=True)
class Message:
    kind: str
    round: int
    sender: int  # index in the group's sorted member list
    body: Body
    raw: bytes


@dataclass(frozen=True)
class SharePlain:
    share_b: bytes
    sig_b: bytes
    share_s: bytes
    sig_s: bytes


def max_size(kind: str, members: int, dim: int) -> int:
    """The most bytes a message of ``kind`` may have in a group of ``members`` with vectors of ``dim``."""
    if kind == "masked":
        return _FIXED_OVERHEAD + 3 * members + 4 * dim
    if kind == "unmask":
        return _FIXED_OVERHEAD + members * (8 + SHARE_SIZE + SIG_SIZE)
    return _FIXED_OVERHEAD + 3 * members + _SHARES_PLAIN + 16


def encode(identity: Identity, kind: str, group: bytes, round_: int, body: list[Any]) -> bytes:
    signed = [VERSION, kind, group, round_, identity.peer_id, body]
    sig = identity.sign(_pack(signed))
    return _pack([*signed, sig])


def encode_body(body: Body) -> list[Any]:
    if isinstance(body, Advertise):
        return [body.mask_pk, body.commit_b]
    if isinstance(body, Shares):
        return [body.recipient, body.nonce, body.ciphertext]
    if isinstance(body, Masked):
        return [list(body.mask_set), body.vector]
    if isinstance(body, View):
        return [list(body.survivors), body.adverts]
    return [[r.dealer, r.kind, r.share, r.signature] for r in body.items]


def seal_shares(
    sender: nacl.public.PrivateKey, recipient: nacl.public.PublicKey, nonce: bytes, plain: SharePlain
) -> bytes:
    """Encrypt a member's two shares (with their dealer signatures) to their holder."""
    data = _pack([plain.share_b, plain.sig_b, plain.share_s, plain.sig_s])
    return bytes(nacl.public.Box(sender, recipient).encrypt(data, nonce).ciphertext)


def open_shares(
    own: nacl.public.PrivateKey, sender: nacl.public.PublicKey, nonce: bytes, ciphertext: bytes
) -> SharePlain:
    """Decrypt and parse a ``shares`` ciphertext; ``SecAggError('bad_share')`` on any failure."""
    try:
        plain = nacl.public.Box(own, sender).decrypt(ciphertext, nonce)
    except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError, nacl.exceptions.TypeError):
        raise SecAggError("bad_share", "the shares do not decrypt (not for us, or altered)") from None
    try:
        value = _unpack(plain, "shares", max_bin_len=256, max_array_len=8)
    except WireError:
        raise SecAggError("bad_share", "the decrypted shares are not msgpack") from None
    if (
        not isinstance(value, list)
        or len(value) != 4
        or not all(isinstance(v, bytes) for v in value)
        or _pack(value) != plain
    ):
        raise SecAggError("bad_share", "the decrypted shares are not [share_b, sig_b, share_s, sig_s]")
    sb, gb, ss, gs = value
    if len(sb) != SHARE_SIZE or len(ss) != SHARE_SIZE or len(gb) != SIG_SIZE or len(gs) != SIG_SIZE:
        raise SecAggError("bad_share", "a share or a dealer signature has the wrong length")
    return SharePlain(sb, gb, ss, gs)


# ----------------------------------------------------------------------------------- decoding


def _bad(what: str) -> SecAggError:
    return SecAggError("malformed", what)


def _bytes(v: Any, size: int, what: str) -> bytes:
    if not isinstance(v, bytes) or len(v) != size:
        raise _bad(f"{what}: {size} bytes expected")
    return v


def _index(v: Any, members: int, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < members:
        raise SecAggError("not_member", f"{what}: not a member index")
    return v


def _indices(v: Any, members: int, what: str) -> tuple[int, ...]:
    if not isinstance(v, list):
        raise _bad(f"{what}: a list of member indices expected")
    out = tuple(_index(i, members, what) for i in v)
    if list(out) != sorted(set(out)):
        raise _bad(f"{what}: member indices must be sorted and unique")
    return out


def _body(kind: str, body: Any, members: int, dim: int) -> Body:
    if not isinstance(body, list):
        raise _bad("the body is not a list")
    if kind == "advertise" and len(body) == 2:
        return Advertise(_bytes(body[0], 32, "mask_pk"), _bytes(body[1], 32, "commit_b"))
    if kind == "shares" and len(body) == 3:
        if not isinstance(body[2], bytes) or len(body[2]) > _SHARES_PLAIN + 64:
            raise _bad("shares: a ciphertext of at most the plaintext size + 64 bytes expected")
        return Shares(_index(body[0], members, "recipient"), _bytes(body[1], NONCE_SIZE, "nonce"), body[2])
    if kind == "masked" and len(body) == 2:
        return Masked(_indices(body[0], members, "mask set"), _bytes(body[1], 4 * dim, "masked vector"))
    if kind == "view" and len(body) == 2:
        return View(_indices(body[0], members, "survivors"), _bytes(body[1], 32, "adverts digest"))
    if kind == "unmask" and len(body) <= 2 * members:
        items = []
        for item in body:
            if not isinstance(item, list) or len(item) != 4 or item[1] not in ("b", "s"):
                raise _bad("unmask: items are [dealer, 'b'|'s', share, signature]")
            items.append(
                Revealed(
                    _index(item[0], members, "dealer"),
                    item[1],
                    _bytes(item[2], SHARE_SIZE, "share"),
                    _bytes(item[3], SIG_SIZE, "dealer signature"),
                )
            )
        if len({(r.dealer, r.kind) for r in items}) != len(items):
            raise _bad("unmask: a (dealer, kind) appears twice")
        return Unmask(tuple(items))
    raise _bad(f"{kind}: the body has the wrong number of fields")


def peek_round(data: bytes) -> int | None:
    """The round a message claims (unverified; for buffering early messages), or None if unreadable. Reads
    the first fields only, so a large masked vector costs nothing here."""
    unpacker = msgpack.Unpacker(raw=False, max_bin_len=64, max_str_len=64, max_array_len=16)
    unpacker.feed(bytes(data[:256]))
    try:
        if unpacker.read_array_header() != 7:
            return None
        fields = [unpacker.unpack() for _ in range(4)]
    except (msgpack.OutOfData, msgpack.UnpackException, ValueError, TypeError, UnicodeDecodeError):
        return None
    round_ = fields[3]
    if isinstance(round_, int) and not isinstance(round_, bool) and 0 <= round_ < 1 << 63:
        return round_
    return None


def decode(data: bytes, *, group: bytes, members: Sequence[str], dim: int) -> Message:
    """A verified message of ``group`` (``members`` sorted) or ``SecAggError`` with a reason slug: size,
    framing, version, group, membership, signature, then the body's schema."""
    n = len(members)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _bad("not bytes")
    data = bytes(data)
    if len(data) > max_size("masked", n, dim) + max_size("unmask", n, dim):
        raise SecAggError("oversize", f"{len(data)} bytes")
    try:
        value = _unpack(data, "secagg", max_array_len=max(16, 2 * n + 2), max_bin_len=4 * dim + 1024)
    except WireError as exc:
        raise SecAggError("oversize" if exc.reason == "oversize" else "malformed", str(exc)) from None
    if not isinstance(value, list) or len(value) != 7:
        raise _bad("a message is a 7-element array")
    version, kind, grp, round_, sender, body, sig = value
    if version != VERSION or kind not in KINDS:
        raise SecAggError("version", f"unknown version or kind {version!r} {kind!r}")
    if len(data) > max_size(kind, n, dim):
        raise SecAggError("oversize", f"{len(data)} bytes for a {kind} message")
    if not isinstance(round_, int) or isinstance(round_, bool) or not 0 <= round_ < 1 << 63:
        raise _bad("round: an unsigned integer expected")
    if not isinstance(sender, str) or not isinstance(grp, bytes) or not isinstance(sig, bytes):
        raise _bad("group, sender or signature has the wrong type")
    if _pack(value) != data:
        raise _bad("not the canonical msgpack encoding")
    if grp != group:
        raise SecAggError("wrong_group", "a message for another group")
    if sender not in members:
        raise SecAggError("not_member", f"{sender[:16]} is not a member of the group")
    try:
        pk = public_key_from_peer_id(sender)
    except IdentityError:
        raise SecAggError("not_member", "the sender is not an Ed25519 peer id") from None
    if not verify(pk, _pack(value[:6]), sig):
        raise SecAggError("bad_signature", f"{kind} from {sender[:16]}")
    return Message(kind, round_, list(members).index(sender), _body(kind, body, n, dim), data)
