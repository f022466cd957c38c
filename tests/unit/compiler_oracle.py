"""The compiler as it was before issue 16 (recursive, quadratic on deep nesting): the
oracle that ``test_compiler_oracle.py`` compares the current compiler with.

Kept verbatim except that the transitive reduction is computed here from the full
closure (``Graph.descendants``), independently of ``Graph.reduced_children``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from orchestrator.core.dag import Graph as _Graph
from orchestrator.core.models import WorkflowDef
from orchestrator.core.plan import (
    JOIN_PREFIX,
    CanvasNode,
    ChainNode,
    ChordNode,
    Plan,
    TaskNode,
    Unit,
)


class Graph:
    """The parts of :class:`orchestrator.core.dag.Graph` the old compiler read, with the
    reduction taken from the full closure."""

    def __init__(self, graph: _Graph) -> None:
        self.nodes = graph.nodes
        self.topo_order = graph.topo_order
        self.descendants = graph.descendants
        desc = graph.descendants
        out: list[tuple[int, ...]] = []
        for kids in graph.children:
            via = 0
            for c in kids:
                via |= desc[c]
            out.append(tuple(c for c in kids if not via >> c & 1))
        self.reduced_children = tuple(out)


MAX_UNIT_TASKS = 100
MAX_CHORD_DEPTH = 3


# --- series-parallel decomposition --------------------------------------------------------


# Each node of the decomposition tree knows, from construction, what the budget checks
# need: ``size`` (tasks in its canvas: steps plus joins), ``largest`` (signatures in its
# largest message when nothing follows it), ``depth`` (chord nesting) and ``has_region``.
# Every message of a canvas carries whatever follows the canvas, so the largest message
# of a node followed by ``t`` tasks is ``largest + t``; that keeps the checks O(1).


@dataclass(frozen=True)
class _Figures:
    """The figures of a decomposition node that the budget checks read (see above)."""

    size: int = field(init=False, repr=False, compare=False)
    largest: int = field(init=False, repr=False, compare=False)
    depth: int = field(init=False, repr=False, compare=False)
    has_region: bool = field(init=False, repr=False, compare=False)

    def _set(self, size: int, largest: int, depth: int, has_region: bool) -> None:
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "largest", largest)
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "has_region", has_region)


@dataclass(frozen=True)
class Leaf:
    node: int
    # the same for every leaf, so class constants: building a leaf sets nothing
    size: ClassVar[int] = 1
    largest: ClassVar[int] = 1
    depth: ClassVar[int] = 0
    has_region: ClassVar[bool] = False


@dataclass(frozen=True)
class Series(_Figures):
    parts: tuple[SPNode, ...]

    def __post_init__(self) -> None:
        size, largest = 0, 0
        for part in reversed(self.parts):  # part i carries every task after it
            largest = max(largest, part.largest + size)
            size += part.size
        self._set(size, largest, max(p.depth for p in self.parts),
                  any(p.has_region for p in self.parts))


@dataclass(frozen=True)
class Parallel(_Figures):
    parts: tuple[SPNode, ...]

    def __post_init__(self) -> None:
        # each header message carries its branch and the body: the join and what follows
        self._set(sum(p.size for p in self.parts) + 1,
                  max(p.largest for p in self.parts) + 1, max(p.depth for p in self.parts) + 1,
                  any(p.has_region for p in self.parts))


@dataclass(frozen=True)
class Region(_Figures):
    """A connected part that is not series-parallel (it contains an "N")."""

    nodes: tuple[int, ...]

    def __post_init__(self) -> None:
        self._set(len(self.nodes), len(self.nodes), 0, True)


SPNode = Leaf | Series | Parallel | Region


def decompose(dag: _Graph) -> SPNode:
    """Return the series-parallel decomposition tree of an acyclic ``graph``."""
    graph = Graph(dag)
    pos = {n: i for i, n in enumerate(graph.topo_order)}
    nodes = list(graph.topo_order)
    return _decompose(graph, nodes, _mask(nodes), pos)


def _mask(nodes: Sequence[int]) -> int:
    m = 0
    for n in nodes:
        m |= 1 << n
    return m


def _decompose(graph: Graph, nodes: list[int], mask: int, pos: dict[int, int]) -> SPNode:
    if len(nodes) == 1:
        return Leaf(nodes[0])
    comps = _components(graph, nodes, mask)
    if len(comps) > 1:
        return Parallel(tuple(_decompose(graph, c, _mask(c), pos) for c in comps))
    factors = _series_factors(graph, nodes, mask)
    if len(factors) > 1:
        return Series(tuple(_decompose(graph, f, _mask(f), pos) for f in factors))
    return Region(tuple(nodes))


def _components(graph: Graph, nodes: list[int], mask: int) -> list[list[int]]:
    """Weakly connected components of the induced subgraph, each in topological order."""
    parent = {n: n for n in nodes}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    reduced = graph.reduced_children
    for n in nodes:
        for c in reduced[n]:
            if c in parent:  # inside the subgraph (a dict lookup beats a big-int shift)
                a, b = find(n), find(c)
                if a != b:
                    parent[a] = b
    groups: dict[int, list[int]] = {}
    for n in nodes:  # nodes are in topological order, so each group is too
        groups.setdefault(find(n), []).append(n)
    return list(groups.values())


def _series_factors(graph: Graph, nodes: list[int], mask: int) -> list[list[int]]:
    """Cut the topological order where every earlier node precedes every later one."""
    desc = graph.descendants
    factors: list[list[int]] = []
    current: list[int] = []
    common = mask
    prefix = 0
    for n in nodes[:-1]:
        current.append(n)
        prefix |= 1 << n
        common &= desc[n]
        rest = mask & ~prefix
        if rest & ~common == 0:
            factors.append(current)
            current = []
    current.append(nodes[-1])
    factors.append(current)
    return factors


# --- canvas building and segmentation ----------------------------------------------------


@dataclass
class _Builder:
    graph: Graph
    max_unit_tasks: int
    max_chord_depth: int
    units: list[Unit] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)
    joins: int = 0

    def canvas(self, sp: SPNode) -> CanvasNode:
        """Normal-form canvas of a region-free subtree."""
        if isinstance(sp, Leaf):
            return TaskNode(id=self.graph.nodes[sp.node])
        if isinstance(sp, Series):
            items: list[CanvasNode] = []
            for part in sp.parts:
                c = self.canvas(part)
                items.extend(c.items if isinstance(c, ChainNode) else [c])
            return ChainNode(items=tuple(items))
        if isinstance(sp, Parallel):
            self.joins += 1
            join = f"{JOIN_PREFIX}{self.joins}"
            return ChordNode(header=tuple(self.canvas(p) for p in sp.parts), join=join)
        raise TypeError("regions have no canvas")

    def fits(self, sp: SPNode) -> bool:
        return self.fits_stats(sp.largest, sp.depth, sp.has_region)

    def fits_stats(self, largest: int, depth: int, has_region: bool) -> bool:
        return (not has_region and largest <= self.max_unit_tasks
                and depth <= self.max_chord_depth)

    def unit(self, sp: SPNode) -> str:
        canvas = self.canvas(sp)
        uid = f"u{len(self.units)}"
        steps = tuple(self.graph.nodes[n] for n in _leaves(sp))
        self.units.append(Unit(id=uid, canvas=canvas, steps=steps))
        return uid

    def connect(self, before: list[str], after: list[str]) -> None:
        self.edges.extend((a, b) for a in before for b in after)

    def segment(self, sp: SPNode) -> tuple[list[str], list[str]]:
        """Turn ``sp`` into units; return its (source units, sink units)."""
        if isinstance(sp, Leaf) or self.fits(sp):
            uid = self.unit(sp)
            return [uid], [uid]
        if isinstance(sp, Parallel):
            sources: list[str] = []
            sinks: list[str] = []
            for part in sp.parts:
                a, b = self.segment(part)
                sources += a
                sinks += b
            return sources, sinks
        if isinstance(sp, Region):
            return self.region(sp)
        assert isinstance(sp, Series)
        # Greedy: append each part to the open group while the group's chain still fits.
        # The group's stats grow in O(1) per part (see the note above ``Leaf``).
        groups: list[list[SPNode]] = []
        open_fits = False  # whether the open group, groups[-1], fits the budget
        largest = depth = 0  # the open group's chain: largest message, chord depth
        for part in sp.parts:
            grown = max(largest + part.size, part.largest)
            deeper = max(depth, part.depth)
            if open_fits and self.fits(part) and self.fits_stats(grown, deeper, False):
                groups[-1].append(part)
                largest, depth = grown, deeper
            else:
                groups.append([part])
                open_fits = self.fits(part)
                largest, depth = part.largest, part.depth
        first: list[str] = []
        prev: list[str] = []
        for g in groups:
            a, b = self.segment(g[0] if len(g) == 1 else Series(tuple(g)))
            if prev:
                self.connect(prev, a)
            else:
                first = a
            prev = b
        return first, prev

    def region(self, sp: Region) -> tuple[list[str], list[str]]:
        """Chains of the region's linear runs, joined by counters on its other edges."""
        inside = set(sp.nodes)
        kids = {n: [c for c in self.graph.reduced_children[n] if c in inside] for n in sp.nodes}
        indeg = {n: 0 for n in sp.nodes}
        for n in sp.nodes:
            for c in kids[n]:
                indeg[c] += 1
        head_of: dict[int, int] = {}
        runs: dict[int, list[int]] = {}
        for n in sp.nodes:  # topological order: a run's head comes first
            if n in head_of:
                continue
            run = [n]
            while len(kids[run[-1]]) == 1 and indeg[kids[run[-1]][0]] == 1:
                run.append(kids[run[-1]][0])
            for m in run:
                head_of[m] = n
            runs[n] = run
        ends: dict[int, tuple[list[str], list[str]]] = {}
        for head, run in runs.items():
            part: SPNode = Leaf(run[0]) if len(run) == 1 else Series(tuple(Leaf(m) for m in run))
            ends[head] = self.segment(part)
        for head, run in runs.items():
            for c in kids[run[-1]]:
                self.connect(ends[head][1], ends[head_of[c]][0])
        sources = [u for h, r in runs.items() if indeg[h] == 0 for u in ends[h][0]]
        sinks = [u for h, r in runs.items() if not kids[r[-1]] for u in ends[h][1]]
        return sources, sinks


def _leaves(sp: SPNode) -> list[int]:
    if isinstance(sp, Leaf):
        return [sp.node]
    if isinstance(sp, Region):
        return list(sp.nodes)
    return [n for p in sp.parts for n in _leaves(p)]


def compile_workflow(wf: WorkflowDef, *, max_unit_tasks: int = MAX_UNIT_TASKS,
                     max_chord_depth: int = MAX_CHORD_DEPTH) -> Plan:
    """Compile a validated workflow into a plan.

    Args:
        wf: a workflow that passed :func:`orchestrator.core.validation.check`.
        max_unit_tasks: most signatures one message may carry before a cut.
        max_chord_depth: deepest chord nesting allowed in one canvas.

    Returns:
        The plan: units (canvases) and the counter edges between them.
    """
    graph = Graph(wf.graph)
    b = _Builder(graph, max(max_unit_tasks, 2), max(max_chord_depth, 1))
    b.segment(decompose(wf.graph))
    return Plan(workflow=wf.name, version=wf.version, units=tuple(b.units),
                edges=tuple(dict.fromkeys(b.edges)))
