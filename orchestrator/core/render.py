"""Text views of workflows and plans: the canvas tree, Mermaid and Graphviz dot."""

from __future__ import annotations

from collections.abc import Iterator

from orchestrator.core.models import WorkflowDef
from orchestrator.core.plan import CanvasNode, ChainNode, ChordNode, Plan, TaskNode


def plan_tree(plan: Plan, wf: WorkflowDef | None = None) -> str:
    """The plan as an indented tree of canvases, then its counter edges."""
    lines = [f"plan of {plan.workflow!r} (version {plan.version}): {len(plan.units)} "
             f"unit(s), {len(plan.edges)} counter edge(s)"]
    queues = {s.id: s.queue or (wf.default_queue if wf else None) for s in wf.steps} \
        if wf else {}
    for unit in plan.units:
        waits = plan.predecessor_counts[unit.id]
        lines.append(f"unit {unit.id}" + (f"  (waits for {waits} unit(s))" if waits else
                                          "  (starts with the run)"))
        _tree(unit.canvas, "  ", lines, queues)
    if plan.edges:
        lines.append("dependency counters (unit -> unit, via terminal task):")
        for a, b in plan.edges:
            lines.append(f"  {a} [{plan.unit_map[a].terminal}] -> {b}")
    return "\n".join(lines)


def _tree(node: CanvasNode, indent: str, lines: list[str],
          queues: dict[str, str | None]) -> None:
    stack: list[tuple[CanvasNode, str]] = [(node, indent)]  # explicit: any depth
    while stack:
        n, pad = stack.pop()
        if isinstance(n, TaskNode):
            q = queues.get(n.id)
            lines.append(f"{pad}{n.id}" + (f"  @{q}" if q else ""))
        elif isinstance(n, ChainNode):
            lines.append(f"{pad}chain")
            stack.extend((item, pad + "  ") for item in reversed(n.items))
        elif isinstance(n, ChordNode):
            lines.append(f"{pad}chord -> {n.join}")
            stack.extend((branch, pad + "  | ") for branch in reversed(n.header))


def mermaid(wf: WorkflowDef) -> str:
    """The workflow's DAG (transitively reduced) as a Mermaid flowchart."""
    lines = ["flowchart TD"]
    for s in wf.steps:
        label = s.id + (f"<br/>when {s.when}" if s.when else "")
        lines.append(f'  {s.id}["{_esc(label)}"]')
    for a, b, on_failure in _edges(wf):
        arrow = "-. on failure .->" if on_failure else "-->"
        lines.append(f"  {a} {arrow} {b}")
    return "\n".join(lines)


def dot(wf: WorkflowDef) -> str:
    """The workflow's DAG (transitively reduced) in Graphviz dot."""
    lines = [f'digraph "{wf.name}" {{', "  rankdir=TB;"]
    for s in wf.steps:
        extra = f"\\nwhen {s.when}" if s.when else ""
        lines.append(f'  "{s.id}" [label="{_esc(s.id + extra)}"];')
    for a, b, on_failure in _edges(wf):
        style = ' [style=dashed, label="on failure"]' if on_failure else ""
        lines.append(f'  "{a}" -> "{b}"{style};')
    lines.append("}")
    return "\n".join(lines)


def _edges(wf: WorkflowDef) -> Iterator[tuple[str, str, bool]]:
    """Yield each edge ``(parent, child, on_failure)`` of the DAG's transitive reduction,
    ``on_failure`` true where the child handles the parent's failure."""
    g = wf.graph
    handled = wf.handlers_of()
    for i, kids in enumerate(g.reduced_children):
        for k in kids:
            a, b = g.nodes[i], g.nodes[k]
            yield a, b, a in handled.get(b, ())


def _esc(text: str) -> str:
    return text.replace('"', "'")
