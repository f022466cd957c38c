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
            run = self._run_through(x)
            if len(run) > 1:  # x has a series edge: merge its whole path
                self.push(self._chain(run))
                continue
            twins = self.buckets[(self.up[x], self.down[x])]
            if len(twins) > 1:
                px, cx = parents[x], children[x]
                same = [y for y in twins
                        if y != x and alive[y] and parents[y] == px and children[y] == cx]
                if same:
                    self._twins(x, same)
        return [x for x in range(len(alive)) if alive[x]]

    def _run_through(self, x: int) -> list[int]:
        """The longest path through ``x`` whose every edge is a series merge (the only
        child of its parent, whose only parent that is), in order: ``[x]`` if none."""
        before = _series_walk(x, self.parents, self.children)
        before.reverse()
        return [*before, x, *_series_walk(x, self.children, self.parents)]

    def _chain(self, run: list[int]) -> int:
        """Merge the path ``run`` (two or more nodes) into one node; return it.

        One merge for the whole path, which leaves what merging its edges one by one
        would: its end with more outside neighbours survives, the other end's neighbours
        are re-pointed and re-keyed once.
        """
        parents, children, tag, pos = self.parents, self.children, self.tag, self.pos
        first, last = run[0], run[-1]
        item = self.item[first]
        for y in run[1:]:
            item = series(item, self.item[y], pos)
        swap = tag[first] ^ tag[last]
        if len(parents[first]) <= len(children[last]):  # last survives: re-point
            keep = last
            for p in parents[first]:
                children[p].discard(first)
                children[p].add(last)
                self._rekey(p, self.up[p], self.down[p] ^ swap)
            for y in run[:-1]:
                self._kill(y)
            parents[last] = parents[first]
            self._rekey(last, self.up[first], self.down[last])
        else:  # first survives: re-point last's children
            keep = first
            for z in children[last]:
                parents[z].discard(last)
                parents[z].add(first)
                self._rekey(z, self.up[z] ^ swap, self.down[z])
            for y in run[1:]:
                self._kill(y)
            children[first] = children[last]
            self._rekey(first, self.up[first], self.down[last])
        for y in run:
            if y != keep:
                parents[y] = set()
                children[y] = set()
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


def _series_walk(x: int, ahead: list[set[int]], behind: list[set[int]]) -> list[int]:
    """The nodes after ``x`` (``ahead``: children; or, given parents, before it) along
    series edges: each the only node ahead of the last, which is the only one behind it."""
    out: list[int] = []
    while len(ahead[x]) == 1:
        (y,) = ahead[x]
        if len(behind[y]) != 1:
            break
        out.append(y)
        x = y
    return out
