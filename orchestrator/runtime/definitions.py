"""Workflow versions as the runtime uses them: a definition, its plan and what is derived
from both, cached once per process.

:meth:`Definitions.compile` compiles a workflow (once per version) and stores it;
:meth:`Definitions.load` reads a stored version (a worker meets versions by the id its
messages carry).  A process holds one :class:`Definitions`, shared by its coordinator and
its run protocol.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property

from orchestrator import forks
from orchestrator.core.compiler import compile_workflow
from orchestrator.core.conditions import Condition, parse
from orchestrator.core.models import StepDef, TriggerRule, WorkflowDef
from orchestrator.core.plan import CanvasNode, ChainNode, ChordNode, Plan, TaskNode, is_join
from orchestrator.store import RunStore

# rules under which "every parent succeeded" means "run" (see RunStore.begin_step)
_FAST_RULES = frozenset({TriggerRule.ALL_SUCCESS, TriggerRule.ALL_DONE,
                         TriggerRule.ONE_SUCCESS, TriggerRule.NONE_FAILED})


@dataclass(frozen=True)
class Definition:
    """A workflow version with everything derived from it that the runtime needs."""

    wf: WorkflowDef
    plan: Plan

    @cached_property
    def deps(self) -> dict[str, tuple[str, ...]]:
        """Each step's parents."""
        return self.wf.dependencies()

    @cached_property
    def handlers(self) -> dict[str, tuple[str, ...]]:
        """Each failure handler's handled steps."""
        return self.wf.handlers_of()

    @cached_property
    def unit_of_terminal(self) -> dict[str, str]:
        """The unit each terminal task (a step or join id) ends."""
        return {u.terminal: u.id for u in self.plan.units}

    @cached_property
    def conditions(self) -> dict[str, Condition]:
        """Each conditional step's parsed ``when``."""
        return {s.id: parse(s.when) for s in self.wf.steps if s.when}

    @cached_property
    def followers(self) -> dict[str, tuple[str, ...]]:
        """For each step, the steps whose tasks Celery publishes when its task ends: the
        entry steps of what follows it in its chain (none at the end of a chord branch
        or of a unit)."""
        out: dict[str, tuple[str, ...]] = {}
        for u in self.plan.units:
            _followers(u.canvas, (), out)
        return out

    def queue(self, step_id: str, default: str) -> str:
        """The Celery queue of a step's task."""
        return self.wf.step_map[step_id].queue or self.wf.default_queue or default

    def reads(self, step: StepDef) -> list[str]:
        """Steps whose outputs the step reads: its inputs', then its condition's."""
        out = dict.fromkeys(step.input_steps())
        cond = self.conditions.get(step.id)
        if cond:
            out.update(dict.fromkeys(sorted(cond.steps)))
        if step.wait is not None:
            for text in step.wait.expressions().values():
                out.update(dict.fromkeys(sorted(parse(text).steps)))
        if step.map is not None:  # its expansion evaluates `over`
            out.update(dict.fromkeys(sorted(parse(step.map.over).steps)))
        return list(out)

    def fast(self, step: StepDef) -> bool:
        """True when only "every parent succeeded" decides whether the step runs (no
        condition, no failure handling, a rule such as ``all_success``, not a wait, no
        rate limit to draw from first, no concurrency slot to take first)."""
        return (step.trigger_rule in _FAST_RULES and step.id not in self.handlers
                and step.id not in self.conditions and step.wait is None
                and step.map is None
                and step.rate_limit is None and step.concurrency is None)


def _followers(node: CanvasNode, after: tuple[str, ...],
               out: dict[str, tuple[str, ...]]) -> None:
    """Record, for every step in ``node``, what is published when it ends; ``after`` is
    what follows ``node`` itself in its chain."""
    if isinstance(node, TaskNode):
        if not is_join(node.id):
            out[node.id] = after
    elif isinstance(node, ChainNode):
        for i, item in enumerate(node.items):
            nxt = tuple(entry_steps(node.items[i + 1])) if i + 1 < len(node.items) else after
            _followers(item, nxt, out)
    else:
        assert isinstance(node, ChordNode)
        for branch in node.header:
            _followers(branch, (), out)  # a branch ends in the chord's join


def entry_steps(node: CanvasNode) -> list[str]:
    """The steps whose tasks are published with ``node`` itself (the first task of a
    chain, the first of each chord branch)."""
    if isinstance(node, TaskNode):
        return [] if is_join(node.id) else [node.id]
    if isinstance(node, ChainNode):
        return entry_steps(node.items[0])
    assert isinstance(node, ChordNode)
    return [s for branch in node.header for s in entry_steps(branch)]


class Definitions:
    """The definitions of one store, cached in this process (least recently used out)."""

    def __init__(self, store: RunStore, max_unit_tasks: int, cache_size: int = 256) -> None:
        self.store = store
        self.max_unit_tasks = max_unit_tasks
        self._cache: OrderedDict[str, Definition] = OrderedDict()
        self._cache_size = cache_size
        self._lock = forks.lock()

    def _get(self, version: str) -> Definition | None:
        with self._lock:
            d = self._cache.get(version)
            if d is not None:
                self._cache.move_to_end(version)
            return d

    def _put(self, d: Definition) -> Definition:
        with self._lock:
            self._cache[d.wf.version] = d
            self._cache.move_to_end(d.wf.version)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return d

    def load(self, version: str) -> Definition:
        """The stored definition of ``version``.

        Raises:
            RunNotFound: the version is not in the store.
        """
        d = self._get(version)
        if d is None:
            wf, plan = self.store.load_definition(version)
            d = self._put(Definition(wf, plan))
        return d

    def cached(self, version: str) -> Definition | None:
        """The definition of ``version`` if this process holds it (no store read)."""
        return self._get(version)

    def compile(self, wf: WorkflowDef) -> Definition:
        """Compile ``wf`` (once per version in this process) and store it.  A version
        stored before keeps its stored plan, which every worker loads: this process uses
        it too, even where its own compiler (another release, other settings) would cut
        the workflow otherwise."""
        d = self._get(wf.version)
        if d is None:
            plan = compile_workflow(wf, max_unit_tasks=self.max_unit_tasks)
            if not self.store.save_definition(wf, plan):
                plan = self.store.load_definition(wf.version)[1]
            d = self._put(Definition(wf, plan))
        return d
