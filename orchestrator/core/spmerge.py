"""Bottom-up half of :func:`orchestrator.core.decomposition.decompose`: the tree while it
is built, and the series and parallel merges on the transitive reduction."""

from __future__ import annotations

import random
from collections import deque
from functools import reduce
from operator import xor

from orchestrator.core.dag import Graph

# --- the tree while it is built -----------------------------------------------------------


class Part:
    """A mutable tree node while the tree is built: ``kind`` is ``S`` (series), ``P``
    (parallel) or ``R`` (region); ``low`` is the topological position of its first step.
    A step is a plain ``int``."""

    __slots__ = ("kind", "low", "parts")

    def __init__(self, kind: str, parts: deque[Item] | list[Item], low: int) -> None:
        self.kind = kind
        self.parts = parts
        self.low = low


Item = int | Part


def series(a: Item, b: Item, pos: tuple[int, ...]) -> Item:
    """``a`` then ``b``, flattened (the shorter list is copied into the longer one)."""
    a_s = isinstance(a, Part) and a.kind == "S"
    b_s = isinstance(b, Part) and b.kind == "S"
    if a_s and b_s:
        assert isinstance(a, Part) and isinstance(b, Part)
        if len(a.parts) >= len(b.parts):
            a.parts.extend(b.parts)
            return a
        assert isinstance(b.parts, deque)
        b.parts.extendleft(reversed(a.parts))
        b.low = a.low
        return b
    if a_s:
        assert isinstance(a, Part)
        a.parts.append(b)
        return a
    low = pos[a] if isinstance(a, int) else a.low
    if b_s:
        assert isinstance(b, Part) and isinstance(b.parts, deque)
        b.parts.appendleft(a)
        b.low = low
        return b
    return Part("S", deque((a, b)), low)


def parallel(a: Item, b: Item, pos: tuple[int, ...]) -> Item:
    """``a`` beside ``b``, flattened (the shorter list is copied into the longer one)."""
    a_low = pos[a] if isinstance(a, int) else a.low
    b_low = pos[b] if isinstance(b, int) else b.low
    a_p = isinstance(a, Part) and a.kind == "P"
    b_p = isinstance(b, Part) and b.kind == "P"
    if a_p and b_p:
        assert isinstance(a, Part) and isinstance(b, Part)
        big, small = (a, b) if len(a.parts) >= len(b.parts) else (b, a)
        big.parts.extend(small.parts)
        big.low = min(a_low, b_low)
        return big
    if a_p or b_p:
        big_p, other = (a, b) if a_p else (b, a)
        assert isinstance(big_p, Part)
        big_p.parts.append(other)
        big_p.low = min(a_low, b_low)
        return big_p
    return Part("P", [a, b], min(a_low, b_low))


# --- bottom-up: series and parallel merges ------------------------------------------------


class Merger:
    """The transitive reduction with merged sets as nodes (see :mod:`.decomposition`).

    A merged set keeps the index of one of its nodes.  ``key[x]`` hashes ``x``'s parents
    and children (XOR of random 64-bit tags), so candidates for a parallel merge are
    found in O(1); the sets themselves are compared before any merge.
    """

    def __init__(self, graph: Graph) -> None:
        n = len(graph.nodes)
        self.pos = graph.position
        self.parents = list(map(set, graph.reduced_parents))
        self.children = list(map(set, graph.reduced_children))
        rng = random.Random(n)  # any tags work; a fixed seed keeps runs reproducible
        self.tag = [rng.getrandbits(64) for _ in range(n)]
        tag = self.tag
        get = tag.__getitem__
        self.up = [reduce(xor, map(get, ps), 0) for ps in graph.reduced_parents]
        self.down = [reduce(xor, map(get, cs), 0) for cs in graph.reduced_children]
        self.item: list[Item] = list(range(n))
        self.alive = [True] * n
        self.buckets: dict[tuple[int, int], set[int]] = {}
        buckets = self.buckets
        for x, key in enumerate(zip(self.up, self.down, strict=True)):
            if key in buckets:
                buckets[key].add(x)
            else:
                buckets[key] = {x}
        self.queue: deque[int] = deque(graph.topo_order)
        self.queued = [True] * n

    def push(self, x: int) -> None:
        if not self.queued[x]:
            self.queued[x] = True
            self.queue.append(x)

    def _rekey(self, x: int, up: int, down: int) -> None:
        old = self.buckets[(self.up[x], self.down[x])]
        old.discard(x)
        self.up[x], self.down[x] = up, down
        self.buckets.setdefault((up, down), set()).add(x)
        self.push(x)

    def _kill(self, x: int) -> None:
        self.buckets[(self.up[x], self.down[x])].discard(x)
        self.alive[x] = False

    def run(self) -> list[int]:
        """Merge until nothing merges; return the remaining nodes."""
        parents, children, alive = self.parents, self.children, self.alive
        while self.queue:
            x = self.queue.popleft()
            self.queued[x] = False
            if not alive[x]:
                continue
            if len(children[x]) == 1:
                (y,) = children[x]
                if len(parents[y]) == 1:
                    self.push(self._chain(x, y))
                    continue
            if len(parents[x]) == 1:
                (p,) = parents[x]
                if len(children[p]) == 1:
                    self.push(self._chain(p, x))
                    continue
            twins = self.buckets[(self.up[x], self.down[x])]
            if len(twins) > 1:
                px, cx = parents[x], children[x]
                same = [y for y in twins
                        if y != x and alive[y] and parents[y] == px and children[y] == cx]
                if same:
                    self._twins(x, same)
        return [x for x in range(len(alive)) if alive[x]]

    def _chain(self, x: int, y: int) -> int:
        """Merge ``x`` with ``y``, its only child, whose only parent it is."""
        parents, children, tag = self.parents, self.children, self.tag
        item = series(self.item[x], self.item[y], self.pos)
        if len(parents[x]) <= len(children[y]):  # y survives: re-point x's parents
            keep, gone = y, x
            swap = tag[x] ^ tag[y]
            for p in parents[x]:
                children[p].discard(x)
                children[p].add(y)
                self._rekey(p, self.up[p], self.down[p] ^ swap)
            self._kill(x)
            parents[y] = parents[x]
            self._rekey(y, self.up[x], self.down[y])
        else:  # x survives: re-point y's children
            keep, gone = x, y
            swap = tag[x] ^ tag[y]
            for z in children[y]:
                parents[z].discard(y)
                parents[z].add(x)
                self._rekey(z, self.up[z] ^ swap, self.down[z])
            self._kill(y)
            children[x] = children[y]
            self._rekey(x, self.up[x], self.down[y])
        parents[gone] = set()
        children[gone] = set()
        self.item[keep] = item
        return keep

    def _twins(self, x: int, ys: list[int]) -> None:
        """Merge ``ys`` into ``x``, in that order: all have the same parents and children.

        One merge of them all, which leaves what merging them one by one would: the
        parents and children lose ``ys`` and are re-keyed once (the XOR of their tags),
        and are queued in the order the first merge would queue them.
        """
        parents, children, tag = self.parents, self.children, self.tag
        gone = set(ys)
        t = 0
        item = self.item[x]
        for y in ys:
            self._kill(y)
            t ^= tag[y]
            item = parallel(item, self.item[y], self.pos)
        first = ys[0]
        for p in parents[first]:
            children[p] -= gone
            self._rekey(p, self.up[p], self.down[p] ^ t)
        for z in children[first]:
            parents[z] -= gone
            self._rekey(z, self.up[z] ^ t, self.down[z])
        for y in ys:
            parents[y] = set()
            children[y] = set()
        self.item[x] = item
        self.push(x)
