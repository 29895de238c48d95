"""Order statistics along axis 0 of a ``(k, d)`` stack, block by block, by a pruned sorting network.

``numpy.median(stack, axis=0)`` copies the whole stack and runs introselect column by column with strided
access; on a (16, 1e7) float32 stack it is ~80x slower than the mean. :func:`~p2pfl.aggregation.median`
and :func:`~p2pfl.aggregation.trimmed_mean` instead walk the columns in blocks of ``_BLOCK`` (so the ``k``
block rows plus scratch stay in cache) and run a *pruned* Batcher sorting network over whole rows with
``np.minimum`` / ``np.maximum``: every comparator becomes one vectorised call over the block, and
comparators (or the min/max half of one) that cannot reach the requested order statistics are removed at
plan time. Extra memory is ``O(k * _BLOCK)`` beyond the output. The result is bit-for-bit
``numpy.median``: the two middle order statistics are identical values, and their mean is formed exactly
as numpy does, ``(a + b) / 2`` in float32 (so two values near float32 max overflow to ``inf`` exactly as
``numpy.median`` does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

import numpy as np

from p2pfl.aggregation._inputs import F32

#: Columns per block (16 rows x 32768 float32 = 2 MiB, L2/L3-resident). A sweep over 8k-256k columns on
#: the (16, 1e7) stack put the optimum at 32k-64k: smaller blocks pay numpy's per-call overhead
#: (~1 us x comparators x blocks), larger ones spill the slab out of cache.
_BLOCK: Final[int] = 32768
#: Up to this many rows a pruned sorting network is used; above, blocked ``np.sort``/``np.partition``.
_NETWORK_MAX_K: Final[int] = 32


def _batcher_network(n: int) -> list[tuple[int, int]]:
    """Batcher's odd-even merge sort for ``n`` wires as standard comparators ``(lo, hi)``.

    Built for the next power of two and cut to ``n`` wires: the missing wires act as ``+inf`` on top,
    which a standard comparator never moves, so dropping every comparator that touches them is exact.
    """
    size = 1
    while size < n:
        size *= 2
    net: list[tuple[int, int]] = []
    p = 1
    while p < size:
        step = p
        while step >= 1:
            for j in range(step % p, size - step, 2 * step):
                for i in range(min(step, size - j - step)):
                    a, b = i + j, i + j + step
                    if a // (2 * p) == b // (2 * p) and b < n:
                        net.append((a, b))
            step //= 2
        p *= 2
    return net


@dataclass(frozen=True)
class _Program:
    """A pruned network compiled to buffer operations.

    Buffers ``0..k-1`` are read-only views of the input rows; ``k..k+n_scratch-1`` are scratch rows.
    Each op is ``(is_max, a, b, dst)``: ``dst = max(a, b)`` or ``min(a, b)``. ``outputs[i]`` is the
    buffer that holds the ``i``-th requested order statistic when the program ends.
    """

    ops: tuple[tuple[bool, int, int, int], ...]
    n_scratch: int
    outputs: tuple[int, ...]


@lru_cache(maxsize=256)
def _program(k: int, wanted: tuple[int, ...]) -> _Program:
    """Compile the sorting network for ``k`` rows, keeping only what reaches the ``wanted`` ranks."""
    # Backward liveness: a comparator survives if either output is live; each output is computed only
    # if it is live, so many comparators shrink to a single min or max.
    live = set(wanted)
    kept: list[tuple[int, int, bool, bool]] = []
    for a, b in reversed(_batcher_network(k)):
        need_lo, need_hi = a in live, b in live
        if need_lo or need_hi:
            kept.append((a, b, need_lo, need_hi))
            live.update((a, b))
    kept.reverse()
    wire = list(range(k))  # wire -> buffer currently holding it
    free: list[int] = []
    n_scratch = 0
    ops: list[tuple[bool, int, int, int]] = []

    def alloc() -> int:
        nonlocal n_scratch
        if free:
            return free.pop()
        n_scratch += 1
        return k + n_scratch - 1

    # Results are written in place over a scratch source whenever that source is dead afterwards, so
    # the working set stays near k + 1 rows of one block (it has to fit in L2).
    for a, b, need_lo, need_hi in kept:
        src_a, src_b = wire[a], wire[b]
        if need_lo and need_hi:
            dst_lo = alloc()
            ops.append((False, src_a, src_b, dst_lo))
            dst_hi = src_b if src_b >= k else (src_a if src_a >= k else alloc())
            ops.append((True, src_a, src_b, dst_hi))
        elif need_lo:
            dst_lo = src_a if src_a >= k else (src_b if src_b >= k else alloc())
            dst_hi = -1
            ops.append((False, src_a, src_b, dst_lo))
        else:
            dst_hi = src_b if src_b >= k else (src_a if src_a >= k else alloc())
            dst_lo = -1
            ops.append((True, src_a, src_b, dst_hi))
        wire[a], wire[b] = dst_lo, dst_hi
        free.extend(x for x in {src_a, src_b} if x >= k and x not in (dst_lo, dst_hi))
    return _Program(tuple(ops), n_scratch, tuple(wire[r] for r in wanted))


Emit = Callable[[int, int, list[F32]], None]


def _order_statistics_blocked(stack: F32, wanted: tuple[int, ...], emit: Emit, block: int) -> None:
    """Compute the ``wanted`` order statistics (ranks along axis 0) block by block.

    For every column block ``[s, e)`` call ``emit(s, e, rows)`` where ``rows[i]`` is the ``(e-s,)``
    vector of rank ``wanted[i]``. The views are only valid during the call.
    """
    k, d = stack.shape
    if k <= _NETWORK_MAX_K:
        prog = _program(k, wanted)
        scratch = np.empty((prog.n_scratch, min(block, max(d, 1))), dtype=np.float32)
        minimum, maximum = np.minimum, np.maximum
        for s in range(0, d, block):
            e = min(s + block, d)
            width = e - s
            bufs = [stack[i, s:e] for i in range(k)]
            bufs.extend(scratch[j, :width] for j in range(prog.n_scratch))
            for is_max, a, b, dst in prog.ops:
                (maximum if is_max else minimum)(bufs[a], bufs[b], out=bufs[dst])
            emit(s, e, [bufs[o] for o in prog.outputs])
        return
    contiguous = list(wanted) == list(range(wanted[0], wanted[-1] + 1)) and len(wanted) > 2
    for s in range(0, d, block):
        e = min(s + block, d)
        part = np.sort(stack[:, s:e], axis=0) if contiguous else np.partition(stack[:, s:e], wanted, axis=0)
        emit(s, e, [part[r] for r in wanted])
