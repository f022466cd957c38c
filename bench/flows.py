"""Step functions and workflow shapes of the benchmark.

The benchmark's workers import this module (``ORCH_WORKFLOW_PACKAGES`` holds
``bench.flows``), which registers ``bench.noop`` and ``bench.sleep``.  Workflows are built
here as :class:`WorkflowDef` objects and submitted as such, so none is module-level (the
catalog would otherwise validate and list them at every worker start).

Every builder is deterministic: the same arguments give the same workflow, hence the same
version, so the coordinator compiles it once and repeated runs reuse the plan.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from orchestrator.core.compiler import Leaf, Region, SPNode, decompose
from orchestrator.core.dag import Graph
from orchestrator.core.dsl import StepHandle, Workflow
from orchestrator.core.models import WorkflowDef
from orchestrator.core.registry import step_function

NOOP = "bench.noop"
SLEEP = "bench.sleep"
ITEM = "bench.noop_item"


@step_function(NOOP)
def noop() -> None:
    """Do nothing: the step costs only the orchestrator's own work."""
    return None


@step_function(SLEEP)
def sleep_ms(ms: int) -> int:
    """Sleep ``ms`` milliseconds (stands in for I/O-bound work) and return ``ms``."""
    time.sleep(ms / 1000)
    return ms


@step_function(ITEM)
def noop_item(item: int) -> None:
    """Do nothing with ``item``: a map item that costs only the orchestrator's work."""
    return None


def mapped(n: int) -> WorkflowDef:
    """One map step over the run's input ``items`` (``n`` of them, given at submit): each
    item a no-op step run.  The version does not depend on ``n``."""
    wf = Workflow("bench_map")
    wf.step("each", noop_item, map={"over": "input.items"})
    return wf.build()


def linear(n: int, name: str = "bench_linear") -> WorkflowDef:
    """``n`` no-op steps in one line: ``s0 -> s1 -> ... -> s{n-1}``."""
    wf = Workflow(f"{name}_{n}")
    prev: list[StepHandle] = []
    for i in range(n):
        prev = [wf.step(f"s{i}", noop, after=prev)]
    return wf.build()


def fan_out_in(n: int) -> WorkflowDef:
    """``n`` independent no-op steps, then one no-op step that waits for all of them."""
    wf = Workflow(f"bench_fan_{n}")
    branches = [wf.step(f"b{i}", noop) for i in range(n)]
    wf.step("fan_in", noop, after=branches)
    return wf.build()


# The customer-order workflow's dependencies (workflows/order/customer_order.yaml):
# inputs, `after` and `on_failure` edges, without conditions or handlers' semantics.
ORDER_SHAPE: dict[str, tuple[str, ...]] = {
    "receive_order": (),
    "check_inventory": ("receive_order",),
    "reserve_item": ("receive_order", "check_inventory"),
    "notify_backorder": ("receive_order", "check_inventory"),
    "generate_invoice": ("receive_order", "reserve_item"),
    "send_shipping_request": ("receive_order", "reserve_item", "generate_invoice"),
    "notify_customer": ("receive_order", "send_shipping_request"),
    "update_accounting": ("generate_invoice",),
    "notify_admin": ("check_inventory",),
}


def order_shape() -> WorkflowDef:
    """The order workflow's 9-step DAG with no-op steps."""
    wf = Workflow("bench_order_shape")
    handles: dict[str, StepHandle] = {}
    for sid, parents in ORDER_SHAPE.items():
        handles[sid] = wf.step(sid, noop, after=[handles[p] for p in parents])
    return wf.build()


@dataclass(frozen=True)
class RandomDag:
    """A random DAG: each step's parents (earlier steps) and its sleep in ms."""

    seed: int
    parents: dict[str, tuple[str, ...]]
    sleep_ms: dict[str, int]

    def levels(self) -> list[list[str]]:
        """Steps grouped by longest-path depth: the level-by-level (BSP) schedule."""
        depth: dict[str, int] = {}
        for sid, ps in self.parents.items():  # parents come first
            depth[sid] = 1 + max((depth[p] for p in ps), default=-1)
        out: list[list[str]] = [[] for _ in range(max(depth.values()) + 1)]
        for sid, d in depth.items():
            out[d].append(sid)
        return out

    def workflow(self) -> WorkflowDef:
        """The DAG as a workflow of ``bench.sleep`` steps."""
        wf = Workflow(f"bench_dag_{len(self.parents)}_{self.seed}")
        handles: dict[str, StepHandle] = {}
        for sid, ps in self.parents.items():
            handles[sid] = wf.step(sid, sleep_ms, after=[handles[p] for p in ps],
                                   ms=self.sleep_ms[sid])
        return wf.build()


def random_dag(n: int, seed: int, sleep_range_ms: tuple[int, int] = (20, 200),
               window: int = 8, max_parents: int = 3) -> RandomDag:
    """A random DAG of ``n`` steps that is not series-parallel (it contains an "N").

    Each step after the first few takes 1 to ``max_parents`` parents among the
    ``window`` steps declared just before it; about one step in ten is a new source.
    Draws are repeated (same seed stream) until the DAG has an "N", so the result
    needs dependency counters and a level-by-level canvas adds false dependencies.
    """
    rng = random.Random(seed)
    while True:
        parents: dict[str, tuple[str, ...]] = {}
        ids = [f"d{i}" for i in range(n)]
        for i, sid in enumerate(ids):
            if i < 2 or rng.random() < 0.1:
                parents[sid] = ()
                continue
            pool = ids[max(0, i - window):i]
            k = rng.randint(1, min(max_parents, len(pool)))
            parents[sid] = tuple(sorted(rng.sample(pool, k), key=ids.index))
        if _has_n(decompose(Graph.from_deps(parents))):
            lo, hi = sleep_range_ms
            return RandomDag(seed, parents, {s: rng.randint(lo, hi) for s in ids})


def _has_n(sp: SPNode) -> bool:
    """True when the decomposition has a part that is not series-parallel."""
    if isinstance(sp, Region):
        return True
    if isinstance(sp, Leaf):
        return False
    return any(_has_n(p) for p in sp.parts)


def layered_data(n: int, seed: int, width: int = 10, fan_in: int = 3,
                 name: str = "bench_big") -> dict[str, Any]:
    """A large workflow as JSON data (what the API or a YAML file would give).

    ``n`` no-op steps in layers of ``width``; each step takes ``fan_in`` random parents
    in the layer above, so about ``fan_in * n`` edges (10,000 steps: ~30,000 edges).
    """
    rng = random.Random(seed)
    steps: list[dict[str, Any]] = []
    for i in range(n):
        layer = i // width
        above = [f"n{j}" for j in range((layer - 1) * width, layer * width)] if layer else []
        after = sorted(rng.sample(above, min(fan_in, len(above)))) if above else []
        steps.append({"id": f"n{i}", "function": NOOP, "after": after})
    return {"name": f"{name}_{n}_{seed}", "steps": steps}


def linear_data(n: int, seed: int) -> dict[str, Any]:
    """A line of ``n`` no-op steps as JSON data (``seed`` only changes the name)."""
    steps = [{"id": f"n{i}", "function": NOOP, "after": [f"n{i - 1}"] if i else []}
             for i in range(n)]
    return {"name": f"bench_line_{n}_{seed}", "steps": steps}
