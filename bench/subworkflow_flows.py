"""The workflows of ``python -m bench.subworkflows``: three no-op steps in a row, flat,
and with the middle one in a sub-workflow (one level, and two levels deep); a map of child
runs (a mapped sub-workflow) and the same map of plain step runs."""

from __future__ import annotations

from bench.flows import noop, noop_item
from orchestrator.core.dsl import Workflow

_leaf = Workflow("bench_sw_leaf", description="One no-op step: the innermost child.")
_leaf.step("b", noop)
bench_sw_leaf = _leaf.build()

_flat = Workflow("bench_sw_flat", description="a -> b -> c, no-op steps.")
_fa = _flat.step("a", noop)
_fb = _flat.step("b", noop, after=[_fa])
_flat.step("c", noop, after=[_fb])
bench_sw_flat = _flat.build()

_one = Workflow("bench_sw_nested", description="a -> kid (bench_sw_leaf) -> c.")
_oa = _one.step("a", noop)
_ok = _one.subworkflow("kid", "bench_sw_leaf", after=[_oa])
_one.step("c", noop, after=[_ok])
bench_sw_nested = _one.build()

_two = Workflow("bench_sw_nested2", description="a -> kid (bench_sw_nested) -> c.")
_ta = _two.step("a", noop)
_tk = _two.subworkflow("kid", "bench_sw_nested", after=[_ta])
_two.step("c", noop, after=[_tk])
bench_sw_nested2 = _two.build()

_mapped = Workflow("bench_sw_mapped", description="kids: one bench_sw_leaf child run per "
                   "item of input.items.")
_mapped.subworkflow("kids", "bench_sw_leaf", map={"over": "input.items", "as": "item"})
bench_sw_mapped = _mapped.build()

_items = Workflow("bench_sw_map_items", description="each: one no-op step run per item "
                  "of input.items (the same map, without child runs).")
_items.step("each", noop_item, map={"over": "input.items", "as": "item"})
bench_sw_map_items = _items.build()
