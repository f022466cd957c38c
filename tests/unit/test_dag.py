"""The DAG helpers, checked against networkx (used in tests only)."""

from __future__ import annotations

import itertools
import random

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core import dag
from orchestrator.core.dag import Graph


def bits(mask: int, graph: Graph) -> set[str]:
    return {graph.nodes[i] for i in range(len(graph.nodes)) if mask >> i & 1}


def random_deps(rng: random.Random, n: int, p: float) -> dict[str, list[str]]:
    """A random DAG: node i's parents are earlier nodes, declared in a shuffled order."""
    names = [f"n{i}" for i in range(n)]
    deps = {name: [names[j] for j in range(i) if rng.random() < p]
            for i, name in enumerate(names)}
    order = list(deps)
    rng.shuffle(order)
    return {k: deps[k] for k in order}


def to_nx(deps: dict[str, list[str]]) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(deps)
    g.add_edges_from((p, n) for n, ps in deps.items() for p in ps)
    return g


@st.composite
def dags(draw: st.DrawFn, max_nodes: int = 40) -> dict[str, list[str]]:
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(1, max_nodes))
    p = draw(st.floats(0, 0.5))
    return random_deps(random.Random(seed), n, p)


def test_from_deps_ignores_unknown_parents_and_repeats() -> None:
    g = Graph.from_deps({"a": [], "b": ["a", "a", "ghost"]})
    assert g.nodes == ("a", "b")
    assert g.parents == ((), (0,))
    assert g.children == ((1,), ())
    assert g.index == {"a": 0, "b": 1}


def test_find_cycle_none_when_acyclic() -> None:
    assert Graph.from_deps({"a": [], "b": ["a"], "c": ["a", "b"]}).find_cycle() is None


@pytest.mark.parametrize(
    ("deps", "cycle"),
    [
        ({"a": ["a"]}, ["a", "a"]),
        ({"a": ["b"], "b": ["a"]}, ["a", "b", "a"]),
        ({"x": [], "a": ["c", "x"], "b": ["a"], "c": ["b"]}, ["a", "b", "c", "a"]),
    ],
)
def test_find_cycle_returns_a_closed_path(deps: dict[str, list[str]], cycle: list[str]) -> None:
    assert Graph.from_deps(deps).find_cycle() == cycle


@settings(max_examples=100, deadline=None)
@given(dags(), st.data())
def test_find_cycle_agrees_with_networkx(deps: dict[str, list[str]], data: st.DataObject) -> None:
    # add one back edge (or not) and compare with networkx
    if data.draw(st.booleans()) and len(deps) > 1:
        names = sorted(deps, key=lambda s: int(s[1:]))
        i, j = sorted(data.draw(st.lists(st.integers(0, len(names) - 1), min_size=2,
                                         max_size=2, unique=True)))
        deps = {**deps, names[i]: [*deps[names[i]], names[j]]}
    g = Graph.from_deps(deps)
    cycle = g.find_cycle()
    assert (cycle is None) == nx.is_directed_acyclic_graph(to_nx(deps))
    if cycle is not None:
        assert cycle[0] == cycle[-1]
        for a, b in itertools.pairwise(cycle):
            assert a in deps[b], f"{a} -> {b} is not an edge"


@settings(max_examples=100, deadline=None)
@given(dags())
def test_topo_order(deps: dict[str, list[str]]) -> None:
    g = Graph.from_deps(deps)
    order = [g.nodes[i] for i in g.topo_order]
    assert sorted(order) == sorted(deps)
    pos = {n: i for i, n in enumerate(order)}
    for n, ps in deps.items():
        for p in ps:
            assert pos[p] < pos[n]


def test_topo_order_is_stable_in_declaration_order() -> None:
    g = Graph.from_deps({"c": [], "a": [], "b": ["c"]})
    assert [g.nodes[i] for i in g.topo_order] == ["c", "a", "b"]


def test_topo_order_refuses_a_cycle() -> None:
    with pytest.raises(ValueError, match="cycle"):
        _ = Graph.from_deps({"a": ["b"], "b": ["a"]}).topo_order


@settings(max_examples=100, deadline=None)
@given(dags())
def test_descendants_and_ancestors(deps: dict[str, list[str]]) -> None:
    g = Graph.from_deps(deps)
    ref = to_nx(deps)
    for i, n in enumerate(g.nodes):
        assert bits(g.descendants[i], g) == nx.descendants(ref, n)
        assert bits(g.ancestors[i], g) == nx.ancestors(ref, n)
    for a in g.nodes:
        for b in g.nodes:
            assert g.is_ancestor(a, b) == (a != b and nx.has_path(ref, a, b))


@settings(max_examples=100, deadline=None)
@given(dags())
def test_transitive_reduction(deps: dict[str, list[str]]) -> None:
    g = Graph.from_deps(deps)
    expected = set(nx.transitive_reduction(to_nx(deps)).edges())
    got = {(g.nodes[i], g.nodes[c]) for i, kids in enumerate(g.reduced_children) for c in kids}
    assert got == expected
    got_from_parents = {(g.nodes[p], g.nodes[i]) for i, ps in enumerate(g.reduced_parents)
                        for p in ps}
    assert got_from_parents == expected


def test_transitive_reduction_of_a_large_graph() -> None:
    deps = random_deps(random.Random(7), 300, 0.05)
    g = Graph.from_deps(deps)
    expected = set(nx.transitive_reduction(to_nx(deps)).edges())
    got = {(g.nodes[i], g.nodes[c]) for i, kids in enumerate(g.reduced_children) for c in kids}
    assert got == expected


@pytest.mark.parametrize(("window", "passes"), [(1, 32), (2, 32), (5, 32), (2, 0)])
@settings(max_examples=60, deadline=None)
@given(deps=dags())
def test_transitive_reduction_past_the_bitset_window(deps: dict[str, list[str]],
                                                     window: int, passes: int) -> None:
    """With a tiny window most nodes' children spread past it, so the search that settles
    them (or, with ``passes`` 0, the full closure), and the bitsets near the window's
    edge, must agree with networkx too."""
    old = dag._WINDOW, dag._SEARCH_PASSES
    # read at call time; restored below (hypothesis reruns the body)
    dag._WINDOW, dag._SEARCH_PASSES = window, passes
    try:
        g = Graph.from_deps(deps)
        got = {(g.nodes[i], g.nodes[c]) for i, kids in enumerate(g.reduced_children)
               for c in kids}
    finally:
        dag._WINDOW, dag._SEARCH_PASSES = old
    assert got == set(nx.transitive_reduction(to_nx(deps)).edges())


def test_reduction_keeps_the_order_of_children() -> None:
    g = Graph.from_deps({"a": [], "c": ["a"], "b": ["a", "c"], "d": ["a", "b"], "e": ["a"]})
    assert [g.nodes[c] for c in g.reduced_children[g.index["a"]]] == ["c", "e"]


def test_critical_path_small() -> None:
    g = Graph.from_deps({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": []})
    assert g.critical_path({"a": 1, "b": 5, "c": 2, "d": 1, "e": 3}) == 7
    assert g.critical_path({"e": 10}) == 10
    assert g.critical_path({}) == 0
    assert Graph.from_deps({}).critical_path({}) == 0


@settings(max_examples=100, deadline=None)
@given(dags(), st.randoms(use_true_random=False))
def test_critical_path_agrees_with_networkx(deps: dict[str, list[str]],
                                            rng: random.Random) -> None:
    duration = {n: float(rng.randint(0, 9)) for n in deps}
    ref = to_nx(deps)
    # longest path by node weight: put each node's duration on its outgoing edges
    # and add a sink so the last node counts too
    for n in deps:
        ref.add_edge(n, "__end__")
    for a, b in ref.edges():
        ref[a][b]["w"] = duration[a]
    expected = nx.dag_longest_path_length(ref, weight="w")
    assert Graph.from_deps(deps).critical_path(duration) == expected
