"""Workflow DAG → :class:`~orchestrator.core.plan.Plan`: native canvases where exact, counters
elsewhere.

1. **Decompose** (:mod:`orchestrator.core.decomposition`).  Disconnected parts run in
   *parallel*; a connected part whose topological prefix precedes all the rest is a
   *series*; a connected part with neither split contains an "N" and is a *region*.
2. **Normal form.**  Series → ``chain``; parallel of k ≥ 2 → ``chord(header, join)``
   (never a bare group, never a one-element or empty group, never a group in a group).
3. **Non-series-parallel regions.**  Maximal linear runs of steps become chains; every
   other edge of the region's transitive reduction is a dependency counter between units.
4. **Segments.**  A canvas whose largest message would carry more than
   ``max_unit_tasks`` signatures, whose chords nest deeper than ``max_chord_depth``, or
   with a parallel of more than ``max_chord_width`` branches, is cut at series
   boundaries into units joined by counters, so no message grows with the workflow's
   length.  A wide fan-out so becomes one unit per branch, joined by its successor's
   counter (no chord, no join task, no result backend): each branch's end completes its
   unit in the same script (``RunStore.end_step``), and the last one publishes what
   follows.

Every cut is exact: a counter edge ``u → v`` is only made when every step of ``u``
precedes every step of ``v`` in the workflow's own order.  Nothing here recurses, so any
nesting depth compiles (segmentation runs its steps on an explicit stack, ``_drive``).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter

from orchestrator.core.dag import Graph
from orchestrator.core.decomposition import (
    Leaf,
    Parallel,
    Region,
    Series,
    SPNode,
    decompose,
    leaves,
)
from orchestrator.core.gcpause import gc_paused
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

MAX_UNIT_TASKS = 32
"""Most signatures one unit's message carries (``Settings.max_unit_tasks``).  A chain's
message carries the rest of its chain, so a line's messages average half this many
signatures: at 100 a 200-step line moved about 17 KB per hop through Lua, Redis and the
worker's decoding, at 32 about 5 KB, for one more unit boundary every 32 steps
(``docs/benchmarks.md``, 2026-12-07: ms per hop 0.77-0.79x raw's chain against
1.02-1.08x, Redis server CPU 1.02-1.06x against 1.10-1.11x)."""
MAX_CHORD_DEPTH = 3
MAX_CHORD_WIDTH = 16
"""A parallel of more branches than this runs as units joined by a counter, not as a
chord (``docs/benchmarks.md``: measured both)."""


_UNITS = TypeAdapter(list[Unit])
"""Validates many units in one call (each as ``Unit.model_validate`` would)."""
_TASKS = TypeAdapter(list[TaskNode])
"""Validates many tasks in one call (``{"id": step}`` each, as ``TaskNode(id=step)``)."""

# --- canvas building and segmentation ----------------------------------------------------

_Ends = tuple[list[str], list[str]]
"""A segmented part's (source units, sink units)."""

_Call = Generator["_Call", _Ends, _Ends]
"""A segmentation step: it yields the sub-steps whose ends it needs, then returns its own."""


def _drive(top: _Call) -> _Ends:
    """Run a step that yields sub-steps, on an explicit stack instead of Python's own."""
    stack: list[_Call] = [top]
    value: _Ends | None = None
    while True:
        try:
            sub = stack[-1].send(value)  # type: ignore[arg-type]  # None starts a step
        except StopIteration as stop:
            stack.pop()
            value = stop.value
            if not stack:
                return stop.value  # type: ignore[no-any-return]
        else:
            stack.append(sub)
            value = None


@dataclass
class _Builder:
    graph: Graph
    max_unit_tasks: int
    max_chord_depth: int
    max_chord_width: int = MAX_CHORD_WIDTH
    units: list[Unit] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)
    joins: int = 0
    maps: frozenset[int] = frozenset()
    """Graph nodes of map steps: each is a unit of its own (its task expands the items)."""

    def canvas(self, sp: SPNode) -> CanvasNode:
        """Normal-form canvas of a region-free subtree (joins numbered in pre-order)."""
        names = self.graph.nodes
        if isinstance(sp, Leaf):
            return TaskNode(id=names[sp.node])
        done: list[CanvasNode] = []  # canvases of finished parts, in order
        # (node, next part, where its parts' canvases start in ``done``, its join)
        stack: list[tuple[Series | Parallel, int, int, str]] = []

        def enter(node: SPNode) -> None:
            if isinstance(node, Region):
                raise TypeError("regions have no canvas")
            assert not isinstance(node, Leaf)
            join = ""
            if isinstance(node, Parallel):
                self.joins += 1
                join = f"{JOIN_PREFIX}{self.joins}"
            stack.append((node, 0, len(done), join))

        enter(sp)
        while True:
            node, i, base, join = stack.pop()
            parts = node.parts
            if i < len(parts):
                if isinstance(parts[i], Leaf):  # a run of steps: their tasks at once
                    j = i + 1
                    while j < len(parts) and isinstance(parts[j], Leaf):
                        j += 1
                    done += _TASKS.validate_python([{"id": names[leaf.node]}
                                                    for leaf in parts[i:j]
                                                    if isinstance(leaf, Leaf)])
                    stack.append((node, j, base, join))
                else:
                    stack.append((node, i + 1, base, join))
                    enter(parts[i])
                continue
            kids = done[base:]
            del done[base:]
            result: CanvasNode
            if isinstance(node, Series):
                items: list[CanvasNode] = []
                for c in kids:
                    if isinstance(c, ChainNode):
                        items.extend(c.items)
                    else:
                        items.append(c)
                result = ChainNode(items=tuple(items))
            else:
                result = ChordNode(header=tuple(kids), join=join)
            if not stack:
                return result
            done.append(result)

    def fits(self, sp: SPNode) -> bool:
        if self.maps and (sp.node in self.maps if isinstance(sp, Leaf)
                          else any(n in self.maps for n in leaves(sp))):
            return False  # a map step is cut out: a unit of its own, counters around it
        return self.fits_stats(sp.largest, sp.depth, sp.has_region, sp.width)

    def fits_stats(self, largest: int, depth: int, has_region: bool, width: int) -> bool:
        return (not has_region and largest <= self.max_unit_tasks
                and depth <= self.max_chord_depth and width <= self.max_chord_width)

    def unit(self, sp: SPNode) -> str:
        uid = f"u{len(self.units)}"
        names = self.graph.nodes
        if isinstance(sp, Leaf):  # one step (a wide fan-out: thousands), built directly
            step = names[sp.node]
            self.units.append(Unit(id=uid, canvas=TaskNode(id=step), steps=(step,)))
            return uid
        canvas = self.canvas(sp)
        steps = tuple(names[n] for n in leaves(sp))
        self.units.append(Unit(id=uid, canvas=canvas, steps=steps))
        return uid

    def step_units(self, steps: Sequence[SPNode]) -> list[str]:
        """One unit per step of ``steps`` (leaves), in order, validated together; their
        ids.  Each is the unit :meth:`unit` makes of a leaf."""
        base, names = len(self.units), self.graph.nodes
        batch: list[dict[str, Any]] = []
        for k, leaf in enumerate(steps):
            assert isinstance(leaf, Leaf)
            step = names[leaf.node]
            batch.append({"id": f"u{base + k}", "canvas": TaskNode(id=step),
                          "steps": (step,)})
        self.units += _UNITS.validate_python(batch)
        return [d["id"] for d in batch]

    def connect(self, before: list[str], after: list[str]) -> None:
        self.edges.extend((a, b) for a in before for b in after)

    def segment(self, sp: SPNode) -> _Ends:
        """Turn ``sp`` into units; return its (source units, sink units)."""
        return _drive(self._segment(sp))

    def _segment(self, sp: SPNode) -> _Call:
        if isinstance(sp, Leaf) or self.fits(sp):
            uid = self.unit(sp)
            return [uid], [uid]
        if isinstance(sp, Parallel):
            sources: list[str] = []
            sinks: list[str] = []
            parts = sp.parts
            i = 0
            while i < len(parts):
                if isinstance(parts[i], Leaf):  # a run of steps: one unit each, made at once
                    j = i + 1
                    while j < len(parts) and isinstance(parts[j], Leaf):
                        j += 1
                    uids = self.step_units(parts[i:j])
                    sources += uids
                    sinks += uids
                    i = j
                    continue
                a, b = self._at_once(parts[i]) or (yield self._segment(parts[i]))
                sources += a
                sinks += b
                i += 1
            return sources, sinks
        if isinstance(sp, Region):
            return (yield from self._region(sp))
        assert isinstance(sp, Series)
        # Greedy: append each part to the open group while the group's chain still fits.
        # The group's stats grow in O(1) per part (see the note above ``Leaf`` in decomposition).
        groups: list[list[SPNode]] = []
        open_fits = False  # whether the open group, groups[-1], fits the budget
        largest = depth = 0  # the open group's chain: largest message, chord depth
        for part in sp.parts:
            grown = max(largest + part.size, part.largest)
            deeper = max(depth, part.depth)
            # a part that fits is no wider than the budget, so the group's width is too
            if open_fits and self.fits(part) and self.fits_stats(grown, deeper, False, 1):
                groups[-1].append(part)
                largest, depth = grown, deeper
            else:
                groups.append([part])
                open_fits = self.fits(part)
                largest, depth = part.largest, part.depth
        first: list[str] = []
        prev: list[str] = []
        for g in groups:
            whole = g[0] if len(g) == 1 else Series(tuple(g))
            a, b = self._at_once(whole) or (yield self._segment(whole))
            if prev:
                self.connect(prev, a)
            else:
                first = a
            prev = b
        return first, prev

    def _at_once(self, sp: SPNode) -> _Ends | None:
        """The ends of ``sp`` when it is one unit (no sub-step needed), else ``None``."""
        if isinstance(sp, Leaf) or self.fits(sp):
            uid = self.unit(sp)
            return [uid], [uid]
        return None

    def _region(self, sp: Region) -> _Call:
        """Chains of the region's linear runs, joined by counters on its other edges."""
        nodes = sp.nodes
        reduced = self.graph.reduced_children
        # each node's children inside the region, and how many parents it has there
        kids: dict[int, Sequence[int]] | tuple[tuple[int, ...], ...]
        indeg: dict[int, int] | list[int]
        if len(nodes) == len(reduced):  # the whole graph: its reduction as it is
            kids = reduced
            indeg = list(map(len, self.graph.reduced_parents))
        else:
            inside = set(nodes)
            kids = {}
            indeg = dict.fromkeys(nodes, 0)
            for n in nodes:
                mine = [c for c in reduced[n] if c in inside]
                kids[n] = mine
                for c in mine:
                    indeg[c] += 1
        head_of: dict[int, int] = {}
        runs: dict[int, list[int]] = {}
        for n in nodes:  # topological order: a run's head comes first
            if n in head_of:
                continue
            run = [n]
            head_of[n] = n
            ks = kids[n]
            while len(ks) == 1 and indeg[ks[0]] == 1:
                run.append(ks[0])
                head_of[ks[0]] = n
                ks = kids[ks[0]]
            runs[n] = run
        # a run of one step is one unit, made here in bulk (the common case in a region);
        # ``first`` and ``last`` hold each run's source and sink units
        first: dict[int, list[str]] = {}
        last: dict[int, list[str]] = {}
        units, names = self.units, self.graph.nodes
        batch: list[dict[str, Any]] = []  # one-step units not yet made, validated together
        for head, run in runs.items():
            if len(run) == 1:
                uid = f"u{len(units) + len(batch)}"
                step = names[head]
                batch.append({"id": uid, "canvas": {"kind": "task", "id": step},
                              "steps": (step,)})
                first[head] = last[head] = [uid]
                continue
            if batch:  # before any other unit is made, for the ids' order
                units += _UNITS.validate_python(batch)
                batch = []
            part = Series(tuple(Leaf(m) for m in run))
            first[head], last[head] = self._at_once(part) or (yield self._segment(part))
        if batch:
            units += _UNITS.validate_python(batch)
        edges = self.edges
        for head, run in runs.items():
            before = last[head]
            for c in kids[run[-1]]:
                after = first[head_of[c]]
                if len(before) == 1 and len(after) == 1:
                    edges.append((before[0], after[0]))
                else:
                    self.connect(before, after)
        sources = [u for h in runs if indeg[h] == 0 for u in first[h]]
        sinks = [u for h, r in runs.items() if not kids[r[-1]] for u in last[h]]
        return sources, sinks


def compile_workflow(wf: WorkflowDef, *, max_unit_tasks: int = MAX_UNIT_TASKS,
                     max_chord_depth: int = MAX_CHORD_DEPTH,
                     max_chord_width: int = MAX_CHORD_WIDTH) -> Plan:
    """Compile a validated workflow into a plan.

    Args:
        wf: a workflow that passed :func:`orchestrator.core.validation.check`.
        max_unit_tasks: most signatures one message may carry before a cut.
        max_chord_depth: deepest chord nesting allowed in one canvas.
        max_chord_width: most branches of one chord; a wider parallel is cut into
            units joined by a counter (1: no chord at all).

    Returns:
        The plan: units (canvases) and the counter edges between them.
    """
    with gc_paused():
        graph = wf.graph
        b = _Builder(graph, max(max_unit_tasks, 2), max(max_chord_depth, 1),
                     max(max_chord_width, 1))
        maps = {s.id for s in wf.steps if s.map is not None}
        if maps:
            b.maps = frozenset(i for i, n in enumerate(graph.nodes) if n in maps)
        b.segment(decompose(graph))
        # built without validating again: the units are validated models already, the
        # edges pairs of their ids, the name and version validated text
        return Plan.model_construct(workflow=wf.name, version=wf.version,
                                    units=tuple(b.units), edges=tuple(dict.fromkeys(b.edges)))

