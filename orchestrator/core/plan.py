"""The compiled plan: what the runtime executes, as plain data (no Celery app needed).

A plan is a DAG of **units**.  Each unit is one Celery canvas in normal form — tasks,
``chain``s and ``chord``s whose body is a ``join`` task; never a bare group — and ends in
one *terminal* task.  An edge ``(u, v)`` between units is a **dependency counter**: unit
``v`` is dispatched when the terminals of all its predecessor units have finished.  Every
such edge is exact: every step of ``u`` is a real ancestor of every step of ``v``.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TaskNode(_Frozen):
    """One task: a step (``id`` is the step id) or a join (``id`` starts with ``join:``)."""

    kind: Literal["task"] = "task"
    id: str


class ChainNode(_Frozen):
    """Run ``items`` one after the other (two or more, never a chain directly inside)."""

    kind: Literal["chain"] = "chain"
    items: tuple[CanvasNode, ...]


class ChordNode(_Frozen):
    """Run ``header`` branches in parallel (two or more), then the ``join`` task."""

    kind: Literal["chord"] = "chord"
    header: tuple[CanvasNode, ...]
    join: str


CanvasNode = Annotated[TaskNode | ChainNode | ChordNode, Field(discriminator="kind")]
ChainNode.model_rebuild()
ChordNode.model_rebuild()

JOIN_PREFIX = "join:"


def is_join(task_id: str) -> bool:
    """True for the id of a join task."""
    return task_id.startswith(JOIN_PREFIX)


def walk(node: CanvasNode) -> Iterator[CanvasNode]:
    """Yield ``node`` and every node below it, depth first."""
    yield node
    if isinstance(node, ChainNode):
        for item in node.items:
            yield from walk(item)
    elif isinstance(node, ChordNode):
        for branch in node.header:
            yield from walk(branch)


def terminal(node: CanvasNode) -> str:
    """The id of the task that finishes last in ``node``."""
    if isinstance(node, TaskNode):
        return node.id
    if isinstance(node, ChordNode):
        return node.join
    return terminal(node.items[-1])


def task_count(node: CanvasNode) -> int:
    """Number of tasks (steps and joins) in ``node``."""
    return sum(1 for n in walk(node) if isinstance(n, TaskNode)) + sum(
        1 for n in walk(node) if isinstance(n, ChordNode)
    )


def largest_message(node: CanvasNode, tail: int = 0) -> int:
    """Signatures carried by the largest message publishing ``node`` will send.

    The model of Celery's messages: a chain's first message carries the rest of the
    chain, and each chord header message carries its branch plus the body (the join and
    whatever follows it).  ``tail`` is the number of tasks that follow ``node``.
    """
    if isinstance(node, TaskNode):
        return 1 + tail
    if isinstance(node, ChordNode):
        return max((largest_message(b, 1 + tail) for b in node.header), default=1 + tail)
    worst = 0
    after = tail
    for item in reversed(node.items):
        worst = max(worst, largest_message(item, after))
        after += task_count(item)
    return worst


def chord_depth(node: CanvasNode) -> int:
    """How deeply chords nest in ``node`` (0 for a task or a chain of tasks)."""
    if isinstance(node, TaskNode):
        return 0
    if isinstance(node, ChordNode):
        return 1 + max((chord_depth(b) for b in node.header), default=0)
    return max((chord_depth(i) for i in node.items), default=0)


def unsafe_shapes(node: CanvasNode) -> list[str]:
    """Return every shape in ``node`` that Celery runs wrongly or that the normal form
    forbids (empty list: the canvas is safe).

    Flags a chain of fewer than two items, a chain directly inside a chain, a chord with
    fewer than two header branches or no join, a chord directly in a chord header (it
    needs the blocking join), a task without an id, and a task id used twice.  A bare
    group cannot occur: the plan has no group node, only chords that end in a join.
    """
    out: list[str] = []
    seen: set[str] = set()
    _check_shape(node, "canvas", out, seen)
    return out


def _check_shape(node: CanvasNode, where: str, out: list[str], seen: set[str]) -> None:
    if isinstance(node, TaskNode):
        if not node.id:
            out.append(f"{where}: task without an id")
        elif node.id in seen:
            out.append(f"{where}: task {node.id!r} appears twice")
        seen.add(node.id)
    elif isinstance(node, ChainNode):
        if len(node.items) < 2:
            out.append(f"{where}: chain of {len(node.items)} item(s); needs 2 or more")
        for i, item in enumerate(node.items):
            if isinstance(item, ChainNode):
                out.append(f"{where}.items[{i}]: chain directly inside a chain")
            _check_shape(item, f"{where}.items[{i}]", out, seen)
    else:
        if len(node.header) < 2:
            out.append(f"{where}: chord with {len(node.header)} header branch(es); "
                       "needs 2 or more")
        if not node.join:
            out.append(f"{where}: chord without a join task")
        elif node.join in seen:
            out.append(f"{where}: join {node.join!r} appears twice")
        seen.add(node.join)
        for i, branch in enumerate(node.header):
            if isinstance(branch, ChordNode):
                out.append(f"{where}.header[{i}]: chord directly in a chord header")
            _check_shape(branch, f"{where}.header[{i}]", out, seen)


class Unit(_Frozen):
    """One canvas of the plan."""

    id: str
    canvas: CanvasNode
    steps: tuple[str, ...]

    @property
    def terminal(self) -> str:
        """The task whose end completes the unit (a step id or a join id)."""
        return terminal(self.canvas)


class Plan(_Frozen):
    """The whole compiled workflow."""

    workflow: str
    version: str
    units: tuple[Unit, ...]
    edges: tuple[tuple[str, str], ...] = ()

    @cached_property
    def unit_map(self) -> dict[str, Unit]:
        return {u.id: u for u in self.units}

    @cached_property
    def unit_of_step(self) -> dict[str, str]:
        """Which unit each step runs in."""
        return {s: u.id for u in self.units for s in u.steps}

    @cached_property
    def successors(self) -> dict[str, tuple[str, ...]]:
        out: dict[str, list[str]] = {u.id: [] for u in self.units}
        for a, b in self.edges:
            out[a].append(b)
        return {k: tuple(v) for k, v in out.items()}

    @cached_property
    def predecessor_counts(self) -> dict[str, int]:
        """Initial value of each unit's dependency counter."""
        out = {u.id: 0 for u in self.units}
        for _, b in self.edges:
            out[b] += 1
        return out

    @cached_property
    def sources(self) -> tuple[str, ...]:
        """Units dispatched when the run starts."""
        return tuple(u for u, n in self.predecessor_counts.items() if n == 0)

    def step_edges(self) -> set[tuple[str, str]]:
        """The precedence the plan enforces, as step pairs (its transitive closure is the
        order the runtime guarantees).  Used to prove the plan exact."""
        out: set[tuple[str, str]] = set()
        for u in self.units:
            _series_edges(u.canvas, out)
        for a, b in self.edges:
            for x in self.unit_map[a].steps:
                for y in self.unit_map[b].steps:
                    out.add((x, y))
        return out


def _steps_in(node: CanvasNode) -> list[str]:
    return [n.id for n in walk(node) if isinstance(n, TaskNode) and not is_join(n.id)]


def _series_edges(node: CanvasNode, out: set[tuple[str, str]]) -> None:
    if isinstance(node, ChainNode):
        for a, b in zip(node.items, node.items[1:], strict=False):
            for x in _steps_in(a):
                for y in _steps_in(b):
                    out.add((x, y))
        for item in node.items:
            _series_edges(item, out)
    elif isinstance(node, ChordNode):
        for branch in node.header:
            _series_edges(branch, out)
