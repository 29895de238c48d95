"""Who dials whom: undirected neighbour sets for a scenario's ``[topology]`` and attacker placement.

Graphs are static for the whole run (``peer-sampling`` draws ``fanout`` random peers per peer once, at the
start: each peer's sample plus the peers that sampled it are its neighbours). Every function is deterministic
for a given ``random.Random``.
"""

from __future__ import annotations

import random

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


def dumbbell(n: int) -> Graph:
    """Two cliques of ~n/2 peers joined by one bridge edge (peer 0 of the left, peer n-1 of the right)."""
    half = n // 2
    g: Graph = [set() for _ in range(n)]
    for side in (range(half), range(half, n)):
        for a in side:
            for b in side:
                if a < b:
                    _link(g, a, b)
    _link(g, 0, n - 1)
    return g


def build(kind: str, n: int, rng: random.Random, *, degree: int = 4, fanout: int = 3) -> Graph:
    if kind == "complete":
        return complete(n)
    if kind == "ring":
        return ring(n)
    if kind == "random-regular":
        return random_regular(n, degree, rng)
    if kind == "peer-sampling":
        return peer_sampling(n, fanout, rng)
    if kind == "dumbbell":
        return dumbbell(n)
    raise ScenarioError("topology", "kind", f"unknown topology {kind!r}")


def place_attackers(graph: Graph, count: int, placement: str, rng: random.Random) -> set[int]:
    """``random``: any ``count`` peers. ``targeted``: the best-connected peers (highest degree, ties broken by
    betweenness proxy = number of distinct neighbours' neighbours), i.e. bridges and hubs."""
    n = len(graph)
    if count <= 0:
        return set()
    if placement == "random":
        return set(rng.sample(range(n), count))
    if placement == "targeted":

        def reach(i: int) -> int:
            return len(set().union(*(graph[j] for j in graph[i])) | graph[i]) if graph[i] else 0

        order = sorted(range(n), key=lambda i: (-len(graph[i]), -reach(i), i))
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
