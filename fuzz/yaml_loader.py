"""Fuzz target ``yaml``: workflow files, as the catalog and ``orchestrator validate`` load
them (:mod:`orchestrator.core.yamlio`).

The input is the file's bytes.  Allowed outcomes: a workflow, or a
:class:`~orchestrator.errors.DefinitionError` (which covers ``WorkflowInvalid``,
``TriggerInvalid``, ``ScheduleInvalid`` and ``ConditionError``).  The limits are small,
so that the fuzzer reaches them (an alias bomb, deep nesting, too many steps) quickly.
"""

from __future__ import annotations

from orchestrator.core.triggers import check as check_trigger
from orchestrator.core.validation import check
from orchestrator.core.yamlio import Limits, parse_schedules, parse_triggers, parse_yaml
from orchestrator.errors import DefinitionError

LIMITS = Limits(max_bytes=16 * 1024, max_steps=50, max_depth=32)


def test_one_input(data: bytes) -> None:
    """Load ``data`` as a workflow file; raise only on a crash."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # read_text's refusal: tested in tests/unit/test_yamlio.py
    try:
        check(parse_yaml(text, "fuzz.yaml", LIMITS))
        for td in parse_triggers(text, "fuzz.yaml", LIMITS):
            check_trigger(td)
        parse_schedules(text, "fuzz.yaml", LIMITS)
    except DefinitionError:
        pass
