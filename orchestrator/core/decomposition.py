"""The series-parallel decomposition of a workflow's DAG, in near-linear time at any depth.

The tree is defined top-down: disconnected parts run in *parallel*; a connected part whose
topological prefix precedes all the rest is a *series* of its finest factors; a connected
part with neither split contains an "N" and is a *region* (a leaf of the tree holding all
its steps).  Parallel parts come in the topological order of their first steps, region
steps in topological order.

Computing that definition top-down costs a pass over a part per level, so diamonds nested
``d`` deep cost ``O(d²)``.  :func:`decompose` instead works bottom-up on the transitive
reduction first: it merges a node into its only child when that child has no other parent
(series) and merges two nodes with the same parents and the same children (parallel), in
any order, until no merge applies.  Every merged set is a module (all of it relates alike
to every node outside it), so the merges never cross a region's boundary and a series-
parallel DAG collapses into one node in ``O(e log e)`` for ``e`` edges.  What is left,
when regions remain, is split top-down as defined (the merged sets count as single nodes
there), shedding small pieces so that a level costs what it cuts off (see
:class:`~orchestrator.core.spsplit.Splitter`), and the two halves are spliced into the
one tree.  No step recurses: deep trees use explicit stacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from orchestrator.core.dag import Graph
from orchestrator.core.spmerge import Item, Merger, Part
from orchestrator.core.spsplit import Splitter

# Each node of the decomposition tree knows, from construction, what the compiler's budget
# checks need: ``size`` (tasks in its canvas: steps plus joins), ``largest`` (signatures in
# its largest message when nothing follows it), ``depth`` (chord nesting), ``width`` (the
# most branches of one parallel in it, 1 for none) and ``has_region``.  Every message of
# a canvas carries whatever follows the canvas, so the largest message of a node followed
# by ``t`` tasks is ``largest + t``; that keeps the checks O(1).


@dataclass(frozen=True)
class _Figures:
    """The figures of a decomposition node that the budget checks read (see above)."""

    size: int = field(init=False, repr=False, compare=False)
    largest: int = field(init=False, repr=False, compare=False)
    depth: int = field(init=False, repr=False, compare=False)
    width: int = field(init=False, repr=False, compare=False)
    has_region: bool = field(init=False, repr=False, compare=False)

    def _set(self, size: int, largest: int, depth: int, width: int,
             has_region: bool) -> None:
        # frozen: written past the dataclass's __setattr__, all five at once
        self.__dict__.update(size=size, largest=largest, depth=depth, width=width,
                             has_region=has_region)


@dataclass(frozen=True)
class Leaf:
    """One step (its index in the graph)."""

    node: int
    # the same for every leaf, so class constants: building a leaf sets nothing
    size: ClassVar[int] = 1
    largest: ClassVar[int] = 1
    depth: ClassVar[int] = 0
    width: ClassVar[int] = 1
    has_region: ClassVar[bool] = False


@dataclass(frozen=True)
class Series(_Figures):
    """Parts that run one after the other (two or more, never a series inside)."""

    parts: tuple[SPNode, ...]

    def __post_init__(self) -> None:
        size = largest = depth = width = 0
        has_region = False
        for part in reversed(self.parts):  # part i carries every task after it
            if part.largest + size > largest:
                largest = part.largest + size
            size += part.size
            if part.depth > depth:
                depth = part.depth
            if part.width > width:
                width = part.width
            has_region = has_region or part.has_region
        self._set(size, largest, depth, width, has_region)


@dataclass(frozen=True)
class Parallel(_Figures):
    """Parts that run side by side (two or more, never a parallel inside)."""

    parts: tuple[SPNode, ...]

    def __post_init__(self) -> None:
        # each header message carries its branch and the body: the join and what follows
        size = largest = depth = 0
        width = len(self.parts)
        has_region = False
        for part in self.parts:
            size += part.size
            if part.largest > largest:
                largest = part.largest
            if part.depth > depth:
                depth = part.depth
            if part.width > width:
                width = part.width
            has_region = has_region or part.has_region
        self._set(size + 1, largest + 1, depth + 1, width, has_region)


@dataclass(frozen=True)
class Region(_Figures):
    """A connected part that is not series-parallel (it contains an "N")."""

    nodes: tuple[int, ...]

    def __post_init__(self) -> None:
        self._set(len(self.nodes), len(self.nodes), 0, 1, True)


SPNode = Leaf | Series | Parallel | Region


def leaves(sp: SPNode) -> list[int]:
    """The steps of ``sp``, left to right (a region's in topological order)."""
    out: list[int] = []
    stack: list[SPNode] = [sp]
    while stack:
        node = stack.pop()
        if isinstance(node, Leaf):
            out.append(node.node)
        elif isinstance(node, Region):
            out.extend(node.nodes)
        else:
            stack.extend(reversed(node.parts))
    return out


# --- the frozen tree ----------------------------------------------------------------------


def _flat(part: Part, pos: tuple[int, ...]) -> list[Item]:
    """``part``'s children with same-kind children spliced in (a region: its steps, in
    topological order)."""
    out: list[Item] = []
    stack: list[Item] = list(reversed(part.parts))
    while stack:
        c = stack.pop()
        if isinstance(c, Part) and (c.kind == part.kind or part.kind == "R"):
            stack.extend(reversed(c.parts))
        else:
            out.append(c)
    if part.kind == "R":
        out.sort(key=lambda c: pos[c] if isinstance(c, int) else 0)
    return out


def _freeze(top: Item, pos: tuple[int, ...]) -> SPNode:
    """The frozen tree of ``top`` (post-order on an explicit stack); parallel parts in the
    topological order of their first steps."""
    if isinstance(top, int):
        return Leaf(top)
    low: dict[int, int] = {}  # id(frozen node) -> position of its first step
    done: list[SPNode] = []  # results of finished children, in order
    stack: list[tuple[Part, list[Item], int, int]] = [(top, _flat(top, pos), 0, 0)]
    while True:
        part, kids, i, base = stack.pop()
        node: SPNode
        if part.kind == "R":
            node = Region(tuple(k for k in kids if isinstance(k, int)))
            low[id(node)] = pos[node.nodes[0]]
        elif i < len(kids):
            kid = kids[i]
            stack.append((part, kids, i + 1, base))
            if isinstance(kid, int):
                leaf = Leaf(kid)
                low[id(leaf)] = pos[kid]
                done.append(leaf)
            else:
                stack.append((kid, _flat(kid, pos), 0, len(done)))
            continue
        else:
            parts = done[base:]
            del done[base:]
            if part.kind == "S":
                node = Series(tuple(parts))
            else:
                parts.sort(key=lambda p: low[id(p)])
                node = Parallel(tuple(parts))
            low[id(node)] = low[id(parts[0])]
        if not stack:
            return node
        done.append(node)


def decompose(graph: Graph) -> SPNode:
    """Return the series-parallel decomposition tree of an acyclic ``graph``.

    Raises:
        ValueError: the graph has no node, or a cycle.
    """
    if not graph.nodes:
        raise ValueError("an empty graph has no decomposition")
    merger = Merger(graph)
    rest = merger.run()
    top = merger.item[rest[0]] if len(rest) == 1 else Splitter(merger).split(rest)
    return _freeze(top, graph.position)
