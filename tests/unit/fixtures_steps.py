"""Step functions for the unit tests, registered into their own :class:`Registry`.

They are never run here; their signatures are what validation and the type checks read.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from orchestrator.core.registry import Registry


class Greeting(BaseModel):
    text: str
    length: int


def greet(name: str) -> Greeting:
    """Produce a greeting (a pydantic model output)."""
    return Greeting(text=f"hello {name}", length=len(name))


def shout(text: str) -> str:
    """Upper-case a string (a plain ``str`` output)."""
    return text.upper()


def count(n: int) -> int:
    """Take an ``int`` (fed a ``str`` to provoke a type mismatch)."""
    return n + 1


def add(a: int, b: int = 0) -> int:
    """Two int parameters, one optional."""
    return a + b


def scale(x: float) -> float:
    """A float parameter (an int feeds it)."""
    return x * 2


def read_greeting(greeting: Greeting) -> str:
    """A model parameter (a dict or the same model feeds it)."""
    return greeting.text


def keep(data: dict[str, Any]) -> dict[str, Any]:
    """A dict parameter (a model output feeds it: it crosses the wire as JSON)."""
    return data


def anything(**kwargs: Any) -> dict[str, Any]:
    """Accepts any input."""
    return kwargs


def noop() -> None:
    """No inputs, no output."""


FUNCTIONS = {
    "t.greet": greet,
    "t.shout": shout,
    "t.count": count,
    "t.add": add,
    "t.scale": scale,
    "t.read_greeting": read_greeting,
    "t.keep": keep,
    "t.anything": anything,
    "t.noop": noop,
}


def build_registry() -> Registry:
    """A fresh registry holding every function above (never the default registry)."""
    reg = Registry()
    for name, fn in FUNCTIONS.items():
        reg.register(name, fn)
    return reg
