"""The workflow's graph: cycles, topological order, reachability and its reduction.

Pure functions over integer node indices; reachability sets are Python ints used as
bitsets, so a 10,000-step graph is reduced in milliseconds (``networkx``'s generic
transitive reduction takes seconds at that size).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

_WINDOW = 4096
"""The furthest ahead (in topological positions) :attr:`Graph.reduced_children` tracks
each node's descendants as a bitset: at most 512 bytes a node."""

_SEARCH_PASSES = 32
"""Past this many passes' worth of searches, :attr:`Graph.reduced_children` settles the
nodes whose children spread wider than the window from the full closure instead."""


@dataclass(frozen=True)
class Graph:
    """A DAG over ``nodes``; ``parents[i]`` are the indices of node ``i``'s parents.

    Build it with :meth:`from_deps`; the constructor does not check for cycles.
    """

    nodes: tuple[str, ...]
    parents: tuple[tuple[int, ...], ...]

    @classmethod
    def from_deps(cls, deps: Mapping[str, Sequence[str]]) -> Graph:
        """Build from ``{node: parents}``, ignoring parents that are not nodes."""
        nodes = tuple(deps)
        index = {n: i for i, n in enumerate(nodes)}
        get = index.get
        parents: list[tuple[int, ...]] = []
        for ps in deps.values():
            if len(ps) == 1:  # the common case, without a generator
                i = get(ps[0])
                parents.append(() if i is None else (i,))
            else:
                ids = [i for i in map(get, ps) if i is not None]
                parents.append(tuple(ids) if len(set(ids)) == len(ids)
                               else tuple(dict.fromkeys(ids)))
        return cls(nodes, tuple(parents))

    @cached_property
    def index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.nodes)}

    @cached_property
    def children(self) -> tuple[tuple[int, ...], ...]:
        out: list[list[int]] = [[] for _ in self.nodes]
        for child, ps in enumerate(self.parents):
            for p in ps:
                out[p].append(child)
        return tuple(map(tuple, out))

    def find_cycle(self) -> list[str] | None:
        """Return one cycle as ``[a, b, …, a]``, or ``None`` if the graph is acyclic."""
        try:
            _ = self.topo_order  # the common case, and the compiler needs the order anyway
            return None
        except ValueError:
            pass
        white, grey, black = 0, 1, 2
        color = [white] * len(self.nodes)
        for root in range(len(self.nodes)):
            if color[root] != white:
                continue
            stack: list[tuple[int, int]] = [(root, 0)]
            path: list[int] = [root]
            color[root] = grey
            while stack:
                node, i = stack[-1]
                kids = self.children[node]
                if i < len(kids):
                    stack[-1] = (node, i + 1)
                    k = kids[i]
                    if color[k] == grey:
                        cyc = [*path[path.index(k):], k]
                        return [self.nodes[j] for j in cyc]
                    if color[k] == white:
                        color[k] = grey
                        stack.append((k, 0))
                        path.append(k)
                else:
                    color[node] = black
                    stack.pop()
                    path.pop()
        return None

    @cached_property
    def topo_order(self) -> tuple[int, ...]:
        """Kahn's order, stable in declaration order.  Requires an acyclic graph."""
        indeg = [len(p) for p in self.parents]
        ready = [i for i, d in enumerate(indeg) if d == 0]
        order: list[int] = []
        head = 0
        while head < len(ready):
            n = ready[head]
            head += 1
            order.append(n)
            for c in self.children[n]:
                indeg[c] -= 1
                if indeg[c] == 0:
                    ready.append(c)
        if len(order) != len(self.nodes):
            raise ValueError("graph has a cycle; call find_cycle() first")
        return tuple(order)

    @cached_property
    def descendants(self) -> tuple[int, ...]:
        """``descendants[i]``: bitset of every node reachable from ``i`` (not ``i``)."""
        desc = [0] * len(self.nodes)
        for n in reversed(self.topo_order):
            acc = 0
            for c in self.children[n]:
                acc |= desc[c] | (1 << c)
            desc[n] = acc
        return tuple(desc)

    @cached_property
    def ancestors(self) -> tuple[int, ...]:
        """``ancestors[i]``: bitset of every node that reaches ``i`` (not ``i``)."""
        anc = [0] * len(self.nodes)
        for n in self.topo_order:
            acc = 0
            for p in self.parents[n]:
                acc |= anc[p] | (1 << p)
            anc[n] = acc
        return tuple(anc)

    def is_ancestor(self, a: str, b: str) -> bool:
        """True when ``a`` reaches ``b`` through one or more edges."""
        return bool(self.ancestors[self.index[b]] >> self.index[a] & 1)

    @cached_property
    def position(self) -> tuple[int, ...]:
        """``position[i]``: node ``i``'s index in :attr:`topo_order`."""
        pos = [0] * len(self.nodes)
        for i, n in enumerate(self.topo_order):
            pos[n] = i
        return tuple(pos)

    @cached_property
    def reduced_children(self) -> tuple[tuple[int, ...], ...]:
        """Children after transitive reduction: an edge implied by a longer path is gone.

        Only a node with two or more children can lose an edge: child ``c`` goes when a
        sibling reaches it.  No full closure is built (50,000 steps would need gigabytes of
        bitsets).  Each node's descendants among the next ``w`` positions of the
        topological order are kept as a bitset, ``w`` being the widest spread (last child's
        position minus first child's) of any node's children, up to ``_WINDOW``: that
        settles every node whose children spread no wider.  A node whose children spread
        wider (a step that many far-apart steps follow) is settled by a search that never
        goes past its last child, or by the full closure (:attr:`descendants`) when such
        searches would add up to more than ``_SEARCH_PASSES`` passes over the graph.  So
        the cost is the edges times ``w / 64`` words, plus the searches, and never more
        than the full closure.
        """
        children = self.children
        pos = self.position
        ranked: dict[int, list[int]] = {}  # children by position, of each node with 2+
        window = 0
        for u, kids in enumerate(children):
            if len(kids) > 1:
                r = sorted(kids, key=pos.__getitem__)
                ranked[u] = r
                spread = pos[r[-1]] - pos[r[0]]
                if window < spread <= _WINDOW:
                    window = spread
        wide = [r for r in ranked.values() if pos[r[-1]] - pos[r[0]] > window]
        # a search visits only positions between the first and the last child; when that
        # adds up to many passes over the graph, the full closure is cheaper
        closure = sum(pos[r[-1]] - pos[r[0]] for r in wide) > _SEARCH_PASSES * len(pos)
        out = list(children)
        # One pass, children before parents: a node's children's ``near`` sets are final
        # when it is reached, and one walk over its children both finds the siblings that
        # an earlier sibling reaches and makes its own ``near`` set.
        # ``near[u]`` bit ``i``: the node at position ``pos[u] + 1 + i`` is a descendant of
        # ``u`` (``i < window``).
        full = (1 << window) - 1
        near = [0] * len(pos)
        for u in reversed(self.topo_order):
            kids = children[u]
            if not kids:
                continue
            pu = pos[u]
            mine = ranked.get(u)
            if mine is not None and pos[mine[-1]] - pos[mine[0]] <= window:
                base = pos[mine[0]]
                # bit j: position base + j is a sibling seen so far, or reached from one;
                # siblings sit at distinct positions, so a sibling's own bit never marks
                # another sibling
                via = 0
                gone: set[int] | None = None
                for c in mine:
                    off = pos[c] - base
                    if via >> off & 1:
                        if gone is None:
                            gone = set()
                        gone.add(c)
                    via |= ((near[c] << 1) | 1) << off
                if gone:
                    out[u] = tuple(c for c in kids if c not in gone)
                near[u] = (via << (base - pu - 1)) & full
                continue
            if mine is not None:  # children spread wider than the window
                if closure:
                    desc = self.descendants
                    reach = 0
                    for c in mine:
                        reach |= desc[c]
                    far = {c for c in mine if reach >> c & 1}
                else:
                    far = self._reached_from_siblings(mine)
                if far:
                    out[u] = tuple(c for c in kids if c not in far)
            if window:
                acc = 0
                for w in kids:
                    d = pos[w] - pu
                    if d <= window:
                        acc |= ((near[w] << 1) | 1) << (d - 1)
                near[u] = acc & full
        return tuple(out)

    def _reached_from_siblings(self, ranked: list[int]) -> set[int]:
        """The siblings (sorted by position) that an earlier sibling reaches."""
        pos = self.position
        children = self.children
        last = pos[ranked[-1]]
        seen: set[int] = set()
        gone: set[int] = set()
        for c in ranked:
            if c in seen:
                gone.add(c)
                continue
            seen.add(c)
            stack = [c]
            while stack:
                for w in children[stack.pop()]:
                    if w not in seen and pos[w] <= last:
                        seen.add(w)
                        stack.append(w)
        return gone

    @cached_property
    def reduced_parents(self) -> tuple[tuple[int, ...], ...]:
        out: list[list[int]] = [[] for _ in self.nodes]
        for p, kids in enumerate(self.reduced_children):
            for c in kids:
                out[c].append(p)
        return tuple(tuple(x) for x in out)

    def critical_path(self, duration: Mapping[str, float]) -> float:
        """Longest path by ``duration`` (missing nodes count 0): the makespan lower bound."""
        finish = [0.0] * len(self.nodes)
        for n in self.topo_order:
            start = max((finish[p] for p in self.parents[n]), default=0.0)
            finish[n] = start + duration.get(self.nodes[n], 0.0)
        return max(finish, default=0.0)
