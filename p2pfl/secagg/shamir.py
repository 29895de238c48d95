"""Shamir threshold secret sharing of 32-byte secrets over the prime field GF(2^521 - 1).

A secret is the constant term of a random polynomial of degree ``t - 1``; member ``i`` (1-based x) holds its
value at ``x = i``. Any ``t`` shares give the secret by Lagrange interpolation at 0; any ``t - 1`` shares are
consistent with every secret, each equally likely (tests/secagg/test_shamir.py checks this exhaustively in
a small field). Shares carry no integrity of their own: the caller signs them (the dealer's signature) and
checks the reconstruction against a commitment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from p2pfl.secagg.errors import SecAggError

#: the Mersenne prime 2^521 - 1: every 32-byte secret is a field element
PRIME = (1 << 521) - 1
#: bytes of one share value (big-endian, below PRIME)
SHARE_SIZE = 66
SECRET_SIZE = 32
#: the largest x: shares are numbered 1..MAX_SHARES
MAX_SHARES = 255

RandBytes = Callable[[int], bytes]


def split_int(secret: int, n: int, t: int, randbytes: RandBytes, prime: int = PRIME) -> list[int]:
    """Values at ``x = 1..n`` of a random degree ``t - 1`` polynomial with constant term ``secret``."""
    if not (1 <= t <= n <= min(MAX_SHARES, prime - 1)):
        raise SecAggError("below_threshold", f"need 1 <= t <= n <= {MAX_SHARES}, got t={t} n={n}")
    if not 0 <= secret < prime:
        raise SecAggError("malformed", "the secret is not a field element")
    width = (prime.bit_length() + 7) // 8 + 16  # 128 extra bits: the reduction mod prime is near-uniform
    coeffs = [secret] + [int.from_bytes(randbytes(width), "big") % prime for _ in range(t - 1)]
    shares = []
    for x in range(1, n + 1):
        acc = 0
        for c in reversed(coeffs):  # Horner
            acc = (acc * x + c) % prime
        shares.append(acc)
    return shares


def combine_int(points: Mapping[int, int], t: int, prime: int = PRIME) -> int:
    """The constant term of the polynomial through the ``t`` points with the smallest x of ``points``."""
    if len(points) < t or t < 1:
        raise SecAggError("below_threshold", f"{len(points)} shares, {t} needed")
    xs = sorted(points)[:t]
    if any(not 1 <= x < prime for x in xs):
        raise SecAggError("bad_share", "a share's x is outside the field")
    secret = 0
    for i in xs:
        num, den = 1, 1
        for j in xs:
            if j != i:
                num = num * (-j) % prime
                den = den * (i - j) % prime
        secret = (secret + points[i] * num * pow(den, -1, prime)) % prime
    return secret


def split(secret: bytes, n: int, t: int, randbytes: RandBytes) -> list[bytes]:
    """``n`` shares (member ``i`` gets index ``i - 1``) of a 32-byte secret, each :data:`SHARE_SIZE` bytes."""
    if len(secret) != SECRET_SIZE:
        raise SecAggError("malformed", f"a shared secret has {SECRET_SIZE} bytes")
    values = split_int(int.from_bytes(secret, "big"), n, t, randbytes)
    return [v.to_bytes(SHARE_SIZE, "big") for v in values]


def combine(shares: Mapping[int, bytes], t: int) -> bytes:
    """The 32-byte secret from shares by x (1-based); ``SecAggError`` when too few or malformed, or when the
    result is not a 32-byte value (shares from different polynomials)."""
    points: dict[int, int] = {}
    for x, value in shares.items():
        if len(value) != SHARE_SIZE:
            raise SecAggError("bad_share", f"a share value has {SHARE_SIZE} bytes")
        v = int.from_bytes(value, "big")
        if v >= PRIME:
            raise SecAggError("bad_share", "a share value is not a field element")
        points[x] = v
    secret = combine_int(points, t)
    if secret >> (8 * SECRET_SIZE):
        raise SecAggError("unrecoverable", "the shares do not lie on one polynomial of a 32-byte secret")
    return secret.to_bytes(SECRET_SIZE, "big")
