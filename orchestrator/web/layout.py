"""A workflow's graph laid out for drawing: layered, left to right (pure, no I/O).

A Sugiyama-style layout, kept small: each step goes in the layer after its deepest
parent (longest path from the sources), then a few sweeps order every layer by the
barycentre of its neighbours in the layer before (downward) and after (upward), which
removes most edge crossings.  Edges are drawn by the browser as curves from a node's
right side to its child's left side.  The web UI computes it once per workflow version
(:func:`layout`) and the page only draws it, so a 1,000-step graph costs the browser no
layout time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from graphlib import TopologicalSorter

NODE_W = 150
NODE_H = 30
GAP_X = 50
GAP_Y = 14
SWEEPS = 4


@dataclass(frozen=True)
class Layout:
    """Where each step is drawn.

    Attributes:
        nodes: step id -> (x, y) of its box's top-left corner, in declaration order.
        edges: (parent, child) pairs.
        width, height: the drawing's size.
    """

    nodes: dict[str, tuple[int, int]]
    edges: tuple[tuple[str, str], ...]
    width: int
    height: int

    def to_json(self) -> dict[str, object]:
        """The form the pages read: nodes as ``[id, x, y]`` lists, edges as pairs."""
        return {"nodes": [[s, x, y] for s, (x, y) in self.nodes.items()],
                "edges": [list(e) for e in self.edges], "width": self.width,
                "height": self.height, "node_w": NODE_W, "node_h": NODE_H}


def layered(parents: Mapping[str, Sequence[str]]) -> Layout:
    """Lay out a DAG given as step id -> parent ids (declaration order kept as the
    tie-breaker, so the same graph always gets the same drawing).

    Raises:
        graphlib.CycleError: the graph has a cycle (a validated workflow never does).
    """
    order = {s: i for i, s in enumerate(parents)}
    children: dict[str, list[str]] = {s: [] for s in parents}
    for s, ps in parents.items():
        for p in ps:
            children[p].append(s)
    depth: dict[str, int] = {}
    for s in TopologicalSorter({s: list(ps) for s, ps in parents.items()}).static_order():
        depth[s] = 1 + max((depth[p] for p in parents[s]), default=-1)
    layers: list[list[str]] = [[] for _ in range(1 + max(depth.values(), default=-1))]
    for s in parents:
        layers[depth[s]].append(s)
    pos = {s: float(i) for layer in layers for i, s in enumerate(layer)}

    def sweep(layer: list[str], neighbours: Mapping[str, Sequence[str]]) -> None:
        def key(s: str) -> tuple[float, int]:
            ns = neighbours[s]
            return (sum(pos[n] for n in ns) / len(ns) if ns else pos[s], order[s])
        layer.sort(key=key)
        for i, s in enumerate(layer):
            pos[s] = float(i)

    for _ in range(SWEEPS):
        for layer in layers[1:]:
            sweep(layer, parents)
        for layer in reversed(layers[:-1]):
            sweep(layer, children)
    tallest = max((len(layer) for layer in layers), default=0)
    nodes: dict[str, tuple[int, int]] = {}
    for s in parents:
        layer = layers[depth[s]]
        # centre short layers against the tallest one
        offset = (tallest - len(layer)) * (NODE_H + GAP_Y) // 2
        nodes[s] = (GAP_X // 2 + depth[s] * (NODE_W + GAP_X),
                    GAP_Y + offset + int(pos[s]) * (NODE_H + GAP_Y))
    edges = tuple((p, s) for s, ps in parents.items() for p in ps)
    return Layout(nodes=nodes, edges=edges,
                  width=GAP_X + len(layers) * (NODE_W + GAP_X) - GAP_X,
                  height=2 * GAP_Y + tallest * (NODE_H + GAP_Y) - GAP_Y)


@lru_cache(maxsize=256)
def layout(version: str, parents: tuple[tuple[str, tuple[str, ...]], ...]) -> Layout:
    """:func:`layered`, cached by workflow version (a version's graph never changes)."""
    del version  # the cache key: a version's parents never change
    return layered(dict(parents))
