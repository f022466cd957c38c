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
    """Yield ``node`` and every node below it, depth first (an explicit stack: any depth)."""
    stack: list[CanvasNode] = [node]
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, ChainNode):
            stack.extend(reversed(n.items))
        elif isinstance(n, ChordNode):
            stack.extend(reversed(n.header))


def terminal(node: CanvasNode) -> str:
    """The id of the task that finishes last in ``node``."""
    while isinstance(node, ChainNode):
        node = node.items[-1]
    return node.id if isinstance(node, TaskNode) else node.join


def task_count(node: CanvasNode) -> int:
    """Number of tasks (steps and joins) in ``node``."""
    return sum(1 for n in walk(node) if not isinstance(n, ChainNode))


def largest_message(node: CanvasNode, tail: int = 0) -> int:
    """Signatures carried by the largest message publishing ``node`` will send.

    The model of Celery's messages: a chain's first message carries the rest of the
    chain, and each chord header message carries its branch plus the body (the join and
    whatever follows it).  ``tail`` is the number of tasks that follow ``node``.
    """
    counts = _task_counts(node)
    worst = 0
    stack: list[tuple[CanvasNode, int]] = [(node, tail)]
    while stack:
        n, after = stack.pop()
        if isinstance(n, TaskNode) or (isinstance(n, ChordNode) and not n.header):
            worst = max(worst, 1 + after)
        elif isinstance(n, ChordNode):
            stack.extend((b, 1 + after) for b in n.header)
        else:
            for item in reversed(n.items):
                stack.append((item, after))
                after += counts[id(item)]
    return worst


def _task_counts(node: CanvasNode) -> dict[int, int]:
    """:func:`task_count` of ``node`` and of every node below it, by ``id()``."""
    counts: dict[int, int] = {}
    for n in reversed(list(walk(node))):  # children before their parents
        if isinstance(n, TaskNode):
            counts[id(n)] = 1
        elif isinstance(n, ChordNode):
            counts[id(n)] = 1 + sum(counts[id(b)] for b in n.header)
        else:
            counts[id(n)] = sum(counts[id(i)] for i in n.items)
    return counts


def chord_depth(node: CanvasNode) -> int:
    """How deeply chords nest in ``node`` (0 for a task or a chain of tasks)."""
    deepest = 0
    stack: list[tuple[CanvasNode, int]] = [(node, 0)]
    while stack:
        n, depth = stack.pop()
        if isinstance(n, ChordNode):
            deepest = max(deepest, depth + 1)
            stack.extend((b, depth + 1) for b in n.header)
        elif isinstance(n, ChainNode):
            stack.extend((i, depth) for i in n.items)
    return deepest


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
    # (node, where it sits, what is wrong with it there or ""), depth first; ``where`` is
    # a linked path (parent's path, own segment), spelled out only for a message, so a
    # deep canvas costs no quadratic string building
    stack: list[tuple[CanvasNode, _Path, str]] = [(node, (None, "canvas"), "")]
    while stack:
        n, path, misplaced = stack.pop()
        if misplaced:
            out.append(f"{_spell(path)}: {misplaced}")
        if isinstance(n, TaskNode):
            if not n.id:
                out.append(f"{_spell(path)}: task without an id")
            elif n.id in seen:
                out.append(f"{_spell(path)}: task {n.id!r} appears twice")
            seen.add(n.id)
        elif isinstance(n, ChainNode):
            if len(n.items) < 2:
                out.append(f"{_spell(path)}: chain of {len(n.items)} item(s); needs 2 or more")
            stack.extend(
                (item, (path, f".items[{i}]"),
                 "chain directly inside a chain" if isinstance(item, ChainNode) else "")
                for i, item in reversed(list(enumerate(n.items))))
        else:
            if len(n.header) < 2:
                out.append(f"{_spell(path)}: chord with {len(n.header)} header branch(es); "
                           "needs 2 or more")
            if not n.join:
                out.append(f"{_spell(path)}: chord without a join task")
            elif n.join in seen:
                out.append(f"{_spell(path)}: join {n.join!r} appears twice")
            seen.add(n.join)
            stack.extend(
                (branch, (path, f".header[{i}]"),
                 "chord directly in a chord header" if isinstance(branch, ChordNode) else "")
                for i, branch in reversed(list(enumerate(n.header))))
    return out


_Path = tuple["_Path | None", str]
"""Where a node sits: its parent's path and its own segment (``.items[2]``)."""


def _spell(path: _Path | None) -> str:
    parts: list[str] = []
    while path is not None:
        path, segment = path
        parts.append(segment)
    return "".join(reversed(parts))


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
    for n in walk(node):
        if isinstance(n, ChainNode):
            for a, b in zip(n.items, n.items[1:], strict=False):
                for x in _steps_in(a):
                    for y in _steps_in(b):
                        out.add((x, y))
