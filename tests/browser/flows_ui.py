"""Workflows only the web UI's browser tests run: a 1,000-step graph."""

from __future__ import annotations

import random

from orchestrator.core.registry import step_function
from orchestrator.dev import shapes


@step_function("ui_test.noop")
def noop() -> int:
    """Do nothing (the 1,000-step run's every step)."""
    return 1


# 40 layers of 25 steps, each with up to 2 parents among the two layers above
ui_big_1000 = shapes.workflow(shapes.layered(random.Random(14), 1000, 25, 2),
                              name="ui_big_1000", function="ui_test.noop")
