"""Generated workflow shapes, for the compiler's property tests and the compile benchmark.

A shape is a :data:`Deps` map, step id to the ids of its parents; :func:`workflow` turns
one into a :class:`~orchestrator.core.models.WorkflowDef` whose steps all call one function.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from orchestrator.core.models import StepDef, WorkflowDef

Deps = dict[str, list[str]]
"""Step id -> the ids of the steps it runs after, in declaration order."""


def chain(n: int, prefix: str = "s") -> Deps:
    """``s0 -> s1 -> … -> s{n-1}`` (with ``prefix`` in place of ``s``)."""
    return {f"{prefix}{i}": ([f"{prefix}{i - 1}"] if i else []) for i in range(n)}


def layered(rng: random.Random, n: int, width: int, fan_in: int) -> Deps:
    """Steps ``s0`` … ``s{n-1}`` in layers of ``width``, with parents drawn at random.

    Each step's parents are ``min(fan_in, k)`` distinct steps of the two layers above it
    (``k`` steps in all; the first layer has no parents), drawn with ``rng``: the same seed
    gives the same shape.

    Args:
        rng: The source of randomness; it is advanced.
        n: How many steps.
        width: Steps per layer (the last layer may have fewer); must be >= 1.
        fan_in: Most parents a step has.
    """
    deps: Deps = {}
    layers: list[list[str]] = []
    for start in range(0, n, width):
        layer = [f"s{i}" for i in range(start, min(start + width, n))]
        pool = [p for lay in layers[-2:] for p in lay]
        for s in layer:
            deps[s] = rng.sample(pool, min(fan_in, len(pool)))
        layers.append(layer)
    return deps


def workflow(deps: Mapping[str, Sequence[str]], *, name: str, function: str) -> WorkflowDef:
    """The workflow ``name`` whose step ``s`` runs after ``deps[s]`` and calls ``function``.

    Only the model's own checks run, not :func:`~orchestrator.core.validation.problems_of`:
    ``function`` need not be registered.
    """
    return WorkflowDef(name=name, steps=tuple(
        StepDef(id=s, function=function, after=tuple(ps)) for s, ps in deps.items()))


def zigzag(n: int) -> Deps:
    """Two rows that zigzag: top ``t0 … t{k-1}``, bottom ``b0 … b{n-k-1}`` with ``k =
    (n + 1) // 2``; each ``b{i}`` needs its two neighbours above, ``t{i}`` and
    ``t{i+1}``.  Not series-parallel: every unit ends near two others at once."""
    k = (n + 1) // 2
    deps: Deps = {f"t{i}": [] for i in range(k)}
    for i in range(n - k):
        deps[f"b{i}"] = [f"t{i}", f"t{i + 1}"]
    return deps


def random_dag(rng: random.Random, n: int, window: int = 8, max_parents: int = 3,
               sources: float = 0.1) -> Deps:
    """A random DAG of ``n`` steps: each step after the first takes 1 to ``max_parents``
    parents among the ``window`` steps declared before it, or none (a source) with
    probability ``sources``.  Such graphs are rarely series-parallel."""
    deps: Deps = {}
    names = [f"s{i}" for i in range(n)]
    for i, s in enumerate(names):
        pool = names[max(0, i - window):i]
        if not pool or rng.random() < sources:
            deps[s] = []
        else:
            deps[s] = rng.sample(pool, rng.randint(1, min(max_parents, len(pool))))
    return deps


def fan_out(width: int) -> Deps:
    """One ``root``, ``width`` steps ``w0 … w{width-1}`` after it, one ``sink`` after all
    of them: a single chord ``width`` wide."""
    deps: Deps = {"root": []}
    deps.update({f"w{i}": ["root"] for i in range(width)})
    deps["sink"] = [f"w{i}" for i in range(width)]
    return deps


def nested_diamonds(levels: int) -> Deps:
    """Diamonds nested ``levels`` deep, ``3 * levels + 2`` steps: ``o{i}`` opens level
    ``i``, whose two branches are level ``i + 1`` and the single step ``side{i}``, and
    ``c{i}`` closes it (``o{i} -> (o{i+1} … c{i+1}, side{i}) -> c{i}``).  Its
    series-parallel tree is ``2 * levels`` deep."""
    deps: Deps = {"o0": []}
    for i in range(levels):
        deps[f"o{i + 1}"] = [f"o{i}"]
        deps[f"side{i}"] = [f"o{i}"]
    deps[f"c{levels}"] = [f"o{levels}"]
    for i in reversed(range(levels)):
        deps[f"c{i}"] = [f"c{i + 1}", f"side{i}"]
    return deps
