"""The Python DSL: build a :class:`WorkflowDef` with steps that refer to each other by object.

Example::

    wf = Workflow("customer_order", input_schema=ORDER_SCHEMA)
    check = wf.step("check_inventory", check_inventory, sku=wf.input.sku)
    reserve = wf.step("reserve_item", reserve_item, when=check.output.in_stock,
                      sku=wf.input.sku)
    definition = wf.build()

Parents are given by handle (``check.output.in_stock``, ``after=[check]``), so a typo is
an ``AttributeError`` at the line that makes it, not a broken run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.core.models import (
    Ref,
    RetryPolicy,
    StepDef,
    TriggerRule,
    Value,
    WorkflowDef,
)
from orchestrator.core.registry import Registry, function_name
from orchestrator.core.validation import check


@dataclass(frozen=True)
class Path:
    """A reference under construction: ``wf.input.sku`` or ``step.output.in_stock``.

    Any attribute is a field of the value, so the path's own text lives in ``_text``
    (a field named ``text`` must stay reachable).  ``eq``, ``ne``, ``gt`` and ``lt``
    build conditions; reach a field of one of those names with ``path["eq"]``.
    """

    _text: str

    def __getattr__(self, name: str) -> Path:
        if name.startswith("__"):
            raise AttributeError(name)
        return Path(f"{self._text}.{name}")

    def __getitem__(self, name: str) -> Path:
        return Path(f"{self._text}.{name}")

    def _cmp(self, op: str, other: Any) -> Condition:
        return Condition(f"{self._text} {op} {json.dumps(other)}")

    def eq(self, other: Any) -> Condition:
        """Condition: this value equals ``other`` (a JSON value)."""
        return self._cmp("==", other)

    def ne(self, other: Any) -> Condition:
        """Condition: this value differs from ``other``."""
        return self._cmp("!=", other)

    def gt(self, other: Any) -> Condition:
        """Condition: this value is greater than ``other``."""
        return self._cmp(">", other)

    def lt(self, other: Any) -> Condition:
        """Condition: this value is less than ``other``."""
        return self._cmp("<", other)

    def __invert__(self) -> Condition:
        return Condition(f"!{self._text}")

    def __and__(self, other: Condition | Path) -> Condition:
        return Condition(f"({self._text}) && ({_cond_text(other)})")

    def __or__(self, other: Condition | Path) -> Condition:
        return Condition(f"({self._text}) || ({_cond_text(other)})")


@dataclass(frozen=True)
class Condition:
    """A CEL condition; combine with ``&``, ``|`` and ``~``."""

    text: str

    def __and__(self, other: Condition | Path) -> Condition:
        return Condition(f"({self.text}) && ({_cond_text(other)})")

    def __or__(self, other: Condition | Path) -> Condition:
        return Condition(f"({self.text}) || ({_cond_text(other)})")

    def __invert__(self) -> Condition:
        return Condition(f"!({self.text})")


def _cond_text(c: Condition | Path | str) -> str:
    if isinstance(c, Path):
        return c._text
    return c if isinstance(c, str) else c.text


@dataclass
class StepHandle:
    """A step being defined; use :attr:`output` to read its output in later steps."""

    id: str
    workflow: Workflow
    on_failure: list[str] = field(default_factory=list)

    @property
    def output(self) -> Path:
        """Reference to this step's output (``.field`` for one field)."""
        return Path(f"steps.{self.id}.output")


def _source(v: Any) -> Ref | Value:
    if isinstance(v, Path):
        return Ref(source=v._text)
    if isinstance(v, StepHandle):
        return Ref(source=f"steps.{v.id}.output")
    return Value(value=v)


class Workflow:
    """Builder of one workflow.  Call :meth:`step` for each step, then :meth:`build`."""

    def __init__(self, name: str, *, description: str = "", label: str | None = None,
                 input_schema: dict[str, Any] | type | None = None,
                 default_queue: str | None = None) -> None:
        self.name = name
        self.description = description
        self.label = label
        if isinstance(input_schema, type) and hasattr(input_schema, "model_json_schema"):
            input_schema = input_schema.model_json_schema()
        self.input_schema: dict[str, Any] = (
            input_schema if isinstance(input_schema, dict) else {"type": "object"}
        )
        self.default_queue = default_queue
        self._steps: list[tuple[StepHandle, dict[str, Any]]] = []

    @property
    def input(self) -> Path:
        """Reference to the run's input (``.field`` for one field)."""
        return Path("input")

    def step(self, id: str, function: Any, *, after: Iterable[StepHandle] = (),
             when: Condition | Path | str | None = None,
             trigger_rule: TriggerRule | str = TriggerRule.ALL_SUCCESS,
             retry: RetryPolicy | None = None, soft_timeout_s: float | None = None,
             timeout_s: float | None = None, queue: str | None = None,
             handles: Iterable[StepHandle] = (), description: str = "",
             **inputs: Any) -> StepHandle:
        """Add a step and return its handle.

        Args:
            id: the step's id, unique in the workflow.
            function: a function decorated with ``@step_function`` (or its name).
            after: extra parents, by handle.
            when: run only if this condition holds (else the step is skipped).
            trigger_rule: how parents' final states decide whether it runs.
            retry: retry policy; default one attempt.
            soft_timeout_s: soft time limit; the step function sees an exception.
            timeout_s: hard time limit; the worker process is killed.
            queue: the Celery queue for this step.
            handles: steps whose failure this step handles (it runs only then).
            description: free text.
            **inputs: the step function's inputs: literals, ``wf.input.x`` or
                ``handle.output.x``.
        """
        handle = StepHandle(id, self)
        for h in handles:
            h.on_failure.append(id)
        fields: dict[str, Any] = {
            "id": id,
            "function": function_name(function),
            "description": description,
            "inputs": {k: _source(v) for k, v in inputs.items()},
            "after": tuple(h.id for h in after),
            "when": None if when is None else _cond_text(when),
            "trigger_rule": TriggerRule(trigger_rule),
            "soft_timeout_s": soft_timeout_s,
            "timeout_s": timeout_s,
            "queue": queue,
        }
        if retry is not None:
            fields["retry"] = retry
        self._steps.append((handle, fields))
        return handle

    def build(self, registry: Registry | None = None, *, validate: bool = True) -> WorkflowDef:
        """Return the frozen model.

        Raises:
            WorkflowInvalid: with every problem, when ``validate`` is true.
        """
        steps = tuple(
            StepDef(**fields, on_failure=tuple(handle.on_failure))
            for handle, fields in self._steps
        )
        wf = WorkflowDef(name=self.name, description=self.description, label=self.label,
                         input_schema=self.input_schema, default_queue=self.default_queue,
                         steps=steps)
        return check(wf, registry) if validate else wf
