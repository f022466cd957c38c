"""The workflow's graph: cycles, topological order, reachability and its reduction.

Pure functions over integer node indices; reachability sets are Python ints used as
bitsets, so a 10,000-step graph is reduced in milliseconds (``networkx``'s generic
transitive reduction takes seconds at that size).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property


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
        parents = tuple(
            tuple(dict.fromkeys(index[p] for p in deps[n] if p in index)) for n in nodes
        )
        return cls(nodes, parents)

    @cached_property
    def index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.nodes)}

    @cached_property
    def children(self) -> tuple[tuple[int, ...], ...]:
        out: list[list[int]] = [[] for _ in self.nodes]
        for child, ps in enumerate(self.parents):
            for p in ps:
                out[p].append(child)
        return tuple(tuple(c) for c in out)

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
    def reduced_children(self) -> tuple[tuple[int, ...], ...]:
        """Children after transitive reduction: an edge implied by a longer path is gone."""
        desc = self.descendants
        out: list[tuple[int, ...]] = []
        for kids in self.children:
            via = 0
            for c in kids:
                via |= desc[c]
            out.append(tuple(c for c in kids if not via >> c & 1))
        return tuple(out)

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
