"""Who dials whom: undirected neighbour sets for a scenario's ``[topology]`` and attacker placement.

Graphs are static for the whole run (``peer-sampling`` draws ``fanout`` random peers per peer once, at the
start: each peer's sample plus the peers that sampled it are its neighbours). Every function is deterministic
for a given ``random.Random``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .scenario import ScenarioError

Graph = list[set[int]]


def complete(n: int) -> Graph:
    return [set(range(n)) - {i} for i in range(n)]


def ring(n: int) -> Graph:
    g: Graph = [set() for _ in range(n)]
    for i in range(n):
        _link(g, i, (i + 1) % n)
    return g


def random_regular(n: int, degree: int, rng: random.Random, attempts: int = 200) -> Graph:
    """A connected ``degree``-regular simple graph (pairing model with restarts; bounded attempts)."""
    if degree >= n or n * degree % 2:
        raise ScenarioError("topology", "degree", f"no {degree}-regular graph on {n} nodes")
    if degree == n - 1:
        return complete(n)
    for _ in range(attempts):
        g = _try_pairing(n, degree, rng)
        if g is not None and is_connected(g):
            return g
    raise ScenarioError(
        "topology",
        "degree",
        f"could not draw a connected {degree}-regular graph on {n} nodes in {attempts} tries",
    )


def _try_pairing(n: int, degree: int, rng: random.Random) -> Graph | None:
    g: Graph = [set() for _ in range(n)]
    stubs = [i for i in range(n) for _ in range(degree)]
    rng.shuffle(stubs)
    # greedy repair: pair stubs, re-shuffling the remainder when a pair is a loop or a duplicate
    for _ in range(20 * n):
        if not stubs:
            return g
        a = stubs.pop()
        for j in range(len(stubs) - 1, -1, -1):
            b = stubs[j]
            if b != a and b not in g[a]:
                stubs.pop(j)
                _link(g, a, b)
                break
        else:
            return None
    return None


def peer_sampling(n: int, fanout: int, rng: random.Random) -> Graph:
    """Each peer draws ``fanout`` others; links are symmetric. Repaired to be connected (ring edges added)."""
    g: Graph = [set() for _ in range(n)]
    for i in range(n):
        for j in rng.sample([k for k in range(n) if k != i], fanout):
            _link(g, i, j)
    if not is_connected(g):
        for i in range(n):
            _link(g, i, (i + 1) % n)
    return g


def dumbbell(n: int, bridges: int = 0, links: int = 2) -> Graph:
    """Two cliques joined through a narrow waist.

    ``bridges = 0``: two cliques of ~n/2 peers joined by one bridge edge (peer 0 of the left, peer n-1 of the
    right). ``bridges = k``: the last ``k`` peers are bridge peers, each linked to ``links`` peers of each
    clique (taken round-robin, so different bridges touch different clique peers) and to nothing else; the
    first ``n - k`` peers form the two cliques. Every path between the cliques goes through a bridge peer.
    """
    if bridges <= 0:
        half = n // 2
        g: Graph = [set() for _ in range(n)]
        for side in (range(half), range(half, n)):
            _clique(g, side)
        _link(g, 0, n - 1)
        return g
    m = n - bridges
    if m < 4:
        raise ScenarioError(
            "topology", "bridges", f"{bridges} bridge peers leave fewer than 4 of {n} for the cliques"
        )
    half = m // 2
    g = [set() for _ in range(n)]
    sides = (range(half), range(half, m))
    for side in sides:
        _clique(g, side)
    for j, b in enumerate(bridge_peers(n, bridges)):
        for side in sides:
            for t in range(min(links, len(side))):
                _link(g, b, side[(j * links + t) % len(side)])
    return g


def bridge_peers(n: int, bridges: int) -> list[int]:
    """The bridge peers of ``dumbbell(n, bridges)``: ``[0, n - 1]`` (the bridge edge's ends) for 0, else the
    last ``bridges`` peers."""
    return [0, n - 1] if bridges <= 0 else list(range(n - bridges, n))


def _clique(g: Graph, members: range) -> None:
    for a in members:
        for b in members:
            if a < b:
                _link(g, a, b)


def build(
    kind: str, n: int, rng: random.Random, *, degree: int = 4, fanout: int = 3, bridges: int = 0
) -> Graph:
    if kind == "complete":
        return complete(n)
    if kind == "ring":
        return ring(n)
    if kind == "random-regular":
        return random_regular(n, degree, rng)
    if kind == "peer-sampling":
        return peer_sampling(n, fanout, rng)
    if kind == "dumbbell":
        return dumbbell(n, bridges)
    raise ScenarioError("topology", "kind", f"unknown topology {kind!r}")


def place_attackers(
    graph: Graph, count: int, placement: str, rng: random.Random, bridges: Sequence[int] = ()
) -> set[int]:
    """``random``: any ``count`` peers. ``targeted``: the ``bridges`` first (the peers every path between a
    dumbbell's two halves goes through; see :func:`bridge_peers`), then the best-connected peers (highest
    degree, ties broken by betweenness proxy = number of distinct neighbours' neighbours), i.e. hubs."""
    n = len(graph)
    if count <= 0:
        return set()
    if placement == "random":
        return set(rng.sample(range(n), count))
    if placement == "targeted":

        def reach(i: int) -> int:
            return len(set().union(*(graph[j] for j in graph[i])) | graph[i]) if graph[i] else 0

        first = [b for b in bridges if 0 <= b < n]
        order = first + sorted(set(range(n)) - set(first), key=lambda i: (-len(graph[i]), -reach(i), i))
        return set(order[:count])
    raise ScenarioError("attack", "placement", f"unknown placement {placement!r}")


def is_connected(g: Graph) -> bool:
    if not g:
        return True
    seen, todo = {0}, [0]
    while todo:
        for j in g[todo.pop()]:
            if j not in seen:
                seen.add(j)
                todo.append(j)
    return len(seen) == len(g)


def edges(g: Graph) -> list[tuple[int, int]]:
    return [(a, b) for a in range(len(g)) for b in sorted(g[a]) if a < b]


def _link(g: Graph, a: int, b: int) -> None:
    if a != b:
        g[a].add(b)
        g[b].add(a)
