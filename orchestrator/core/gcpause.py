"""Holding Python's cyclic garbage collector off while a big workflow loads."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector off for the ``with`` block; resume it after, as
    it was.

    Validating and compiling a workflow allocate hundreds of thousands of small objects
    and make no reference cycle, so the collector's passes over the whole heap (the
    workflow's model included) find nothing: they cost as much as the work itself at
    50,000 steps.  Reference counting still frees everything as usual.  Nested use is
    fine: only the outermost block turns the collector back on.
    """
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()
