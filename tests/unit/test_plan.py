"""The plan as data: the shape checker, message sizes, nesting and step precedence."""

from __future__ import annotations

import pytest

from orchestrator.core.plan import (
    CanvasNode,
    ChordNode,
    Plan,
    Unit,
    chord_depth,
    largest_message,
    task_count,
    terminal,
    unsafe_shapes,
)
from tests.unit.plan_checks import T, chain, chord

SAFE = chain(T("a"), chord(1, chain(T("b"), T("c")), T("d")), T("e"))


def test_normal_form_is_safe() -> None:
    assert unsafe_shapes(SAFE) == []
    assert unsafe_shapes(T("a")) == []
    assert unsafe_shapes(chord(1, T("a"), T("b"))) == []


@pytest.mark.parametrize(
    ("canvas", "words"),
    [
        (chain(), "chain of 0 item(s)"),
        (chain(T("a")), "chain of 1 item(s)"),
        (chain(T("a"), chain(T("b"), T("c"))), "chain directly inside a chain"),
        (chord(1), "chord with 0 header branch(es)"),
        (chord(1, T("a")), "chord with 1 header branch(es)"),
        (ChordNode(header=(T("a"), T("b")), join=""), "chord without a join task"),
        (chord(1, chord(2, T("a"), T("b")), T("c")),
         "chord directly in a chord header"),
        (T(""), "task without an id"),
        (chain(T("a"), T("a")), "task 'a' appears twice"),
        (chain(chord(1, T("a"), T("b")), chord(1, T("c"), T("d"))),
         "join 'join:1' appears twice"),
    ],
)
def test_unsafe_shapes_are_flagged(canvas: CanvasNode, words: str) -> None:
    problems = unsafe_shapes(canvas)
    assert any(words in p for p in problems), problems


def test_problems_say_where() -> None:
    canvas = chain(T("a"), chord(1, chain(T("b")), T("c")))
    assert unsafe_shapes(canvas) == ["canvas.items[1].header[0]: chain of 1 item(s); "
                                     "needs 2 or more"]


def test_task_count_and_terminal() -> None:
    assert task_count(SAFE) == 6  # five steps and one join
    assert terminal(SAFE) == "e"
    assert terminal(chain(T("a"), chord(7, T("b"), T("c")))) == "join:7"


def test_largest_message() -> None:
    assert largest_message(T("a")) == 1
    assert largest_message(chain(T("a"), T("b"), T("c"))) == 3
    # the chain's first message carries all six signatures
    assert largest_message(SAFE) == 6
    # a header message carries its branch, the join and what follows the join
    starts_with_chord = chain(chord(1, chain(T("a"), T("b"), T("c")), T("d")), T("e"))
    assert largest_message(starts_with_chord) == 5
    assert largest_message(T("a"), tail=4) == 5


def test_chord_depth() -> None:
    assert chord_depth(T("a")) == 0
    assert chord_depth(chain(T("a"), T("b"))) == 0
    assert chord_depth(SAFE) == 1
    inner = chord(2, T("x"), T("y"))
    assert chord_depth(chord(1, chain(T("a"), inner), T("b"))) == 2


def test_step_edges_and_counters() -> None:
    plan = Plan(workflow="w", version="v", units=(
        Unit(id="u0", canvas=chain(T("a"), chord(1, T("b"), T("c"))),
             steps=("a", "b", "c")),
        Unit(id="u1", canvas=T("d"), steps=("d",)),
        Unit(id="u2", canvas=T("e"), steps=("e",)),
    ), edges=(("u0", "u1"), ("u2", "u1")))
    assert plan.step_edges() == {("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("a", "d"),
                                 ("e", "d")}
    assert plan.predecessor_counts == {"u0": 0, "u1": 2, "u2": 0}
    assert plan.sources == ("u0", "u2")
    assert plan.successors == {"u0": ("u1",), "u1": (), "u2": ("u1",)}
    assert plan.unit_of_step["c"] == "u0"
    assert plan.units[0].terminal == "join:1"
