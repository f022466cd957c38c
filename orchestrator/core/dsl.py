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
    CompensateDef,
    ConcurrencyDef,
    MapDef,
    RateLimitDef,
    Ref,
    RetryPolicy,
    StepDef,
    TriggerRule,
    Value,
    WorkflowDef,
)
from orchestrator.core.registry import Registry, function_name
from orchestrator.core.schedules import Schedule
from orchestrator.core.schedules import from_data as schedule_from_data
from orchestrator.core.subworkflows import SUBWORKFLOW_FUNCTION, SubWorkflowDef
from orchestrator.core.tenants import DEFAULT_TENANT
from orchestrator.core.triggers import StreamSource, TriggerDef, WebhookSource
from orchestrator.core.triggers import check as check_trigger
from orchestrator.core.validation import check
from orchestrator.core.waits import WAIT_FUNCTION, WaitDef
from orchestrator.errors import DefinitionError


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
                 default_queue: str | None = None,
                 concurrency: ConcurrencyDef | dict[str, Any] | None = None) -> None:
        """``concurrency``: at most ``limit`` runs at once per key (a
        :class:`ConcurrencyDef`, or its fields: ``{"key": "input.customer",
        "limit": 2}``)."""
        self.name = name
        self.concurrency = None if concurrency is None else \
            ConcurrencyDef.model_validate(concurrency)
        self.description = description
        self.label = label
        if isinstance(input_schema, type) and hasattr(input_schema, "model_json_schema"):
            input_schema = input_schema.model_json_schema()
        self.input_schema: dict[str, Any] = (
            input_schema if isinstance(input_schema, dict) else {"type": "object"}
        )
        self.default_queue = default_queue
        self._steps: list[tuple[StepHandle, dict[str, Any]]] = []
        self.triggers: list[TriggerDef] = []
        """The event triggers declared with :meth:`trigger` (no part of the workflow's
        content: they never change its version)."""

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
             compensate: Any = None, rate_limit: str | RateLimitDef | None = None,
             concurrency: ConcurrencyDef | dict[str, Any] | None = None,
             map: MapDef | dict[str, Any] | None = None,
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
            compensate: what undoes the step if the run fails after it succeeded: a step
                function (or its name) called with ``input`` and ``output``, or a
                :class:`CompensateDef` (with a retry policy and time limits).
            rate_limit: a rate shared by every worker (``"10/s"``), or a
                :class:`RateLimitDef` with a ``key`` expression.
            concurrency: at most ``limit`` step runs at once per key, across the pool
                (a :class:`ConcurrencyDef`, or its fields).
            map: run once per item of a list (a :class:`MapDef`, or its fields:
                ``{"over": "steps.find.output.files", "as": "path", "max_parallel": 8}``);
                the steps ``over`` reads must be ancestors (``after``).
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
        if rate_limit is not None:
            fields["rate_limit"] = RateLimitDef.model_validate(rate_limit) \
                if isinstance(rate_limit, str) else rate_limit
        if concurrency is not None:
            fields["concurrency"] = ConcurrencyDef.model_validate(concurrency)
        if map is not None:
            fields["map"] = MapDef.model_validate(map)
        if compensate is not None:
            fields["compensate"] = compensate if isinstance(compensate, CompensateDef) \
                else CompensateDef(function=function_name(compensate))
        self._steps.append((handle, fields))
        return handle

    def trigger(self, name: str, source: WebhookSource | StreamSource, *,
                filter: Condition | str | None = None, input: str | None = None,
                event_id: str | None = None, description: str = "",
                tenant: str = DEFAULT_TENANT) -> TriggerDef:
        """Declare an event trigger of this workflow and return it, checked.

        Assign the result to a module-level name: the catalog collects every module-level
        :class:`TriggerDef` of a workflow package, as it does workflows.

        Args:
            name: the trigger's name (the webhook's path ``/v1/hooks/<name>``).
            source: ``WebhookSource(scheme=...)`` or ``StreamSource(stream=...)``.
            filter: CEL over ``event``, ``headers``, ``id``; false: no run.
            input: CEL giving the run input; default the event itself.
            event_id: CEL giving the event's unique id; default ``id``.
            description: free text.
            tenant: whose the trigger, its events and its runs are (API tokens of
                another tenant do not see them).

        Raises:
            TriggerInvalid: an expression does not parse, with every problem.
        """
        td = TriggerDef(name=name, workflow=self.name, source=source,
                        filter=None if filter is None else _cond_text(filter), input=input,
                        event_id=event_id, description=description, tenant=tenant)
        check_trigger(td)
        self.triggers.append(td)
        return td

    def wait(self, id: str, *, sleep_s: float | None = None,
             until: Condition | Path | str | None = None,
             event: Condition | Path | str | None = None, approval: bool = False,
             timeout_s: float | None = None, prompt: str = "",
             after: Iterable[StepHandle] = (), when: Condition | Path | str | None = None,
             trigger_rule: TriggerRule | str = TriggerRule.ALL_SUCCESS,
             queue: str | None = None, handles: Iterable[StepHandle] = (),
             description: str = "") -> StepHandle:
        """Add a durable wait step (held in the store, no worker slot; see
        :mod:`orchestrator.core.waits`) and return its handle.  Give exactly one of:

        Args:
            sleep_s: sleep this long.
            until: CEL giving the time to wait for (a timestamp, RFC 3339, unix seconds).
            event: CEL giving the event key to wait for, e.g.
                ``'"payment:" + input.order_id'``; the event's payload is the output.
            approval: wait for a human's approve or reject (reject fails the step).
            timeout_s: with ``event`` or ``approval``: fail the step after this long.
            prompt: with ``approval``: what the approver is asked.
            after, when, trigger_rule, queue, handles, description: as in :meth:`step`.
        """
        kinds = [k for k, on in (("sleep", sleep_s is not None), ("until", until is not None),
                                 ("event", event is not None), ("approval", approval)) if on]
        if len(kinds) != 1:
            raise DefinitionError(f"wait step {id!r}: give exactly one of sleep_s, until, "
                                  f"event, approval (got {', '.join(kinds) or 'none'})")
        spec: dict[str, Any] = {"kind": kinds[0], "duration_s": sleep_s,
                                "until": None if until is None else _cond_text(until),
                                "key": None if event is None else _cond_text(event),
                                "timeout_s": timeout_s, "prompt": prompt}
        handle = StepHandle(id, self)
        for h in handles:
            h.on_failure.append(id)
        fields: dict[str, Any] = {
            "id": id, "function": WAIT_FUNCTION, "description": description,
            "after": tuple(h.id for h in after),
            "when": None if when is None else _cond_text(when),
            "trigger_rule": TriggerRule(trigger_rule), "queue": queue,
            "wait": WaitDef(**{k: v for k, v in spec.items() if v not in (None, "")}),
        }
        self._steps.append((handle, fields))
        return handle

    def subworkflow(self, id: str, workflow: str | WorkflowDef, *,
                    version: str | None = None, after: Iterable[StepHandle] = (),
                    when: Condition | Path | str | None = None,
                    trigger_rule: TriggerRule | str = TriggerRule.ALL_SUCCESS,
                    retry: RetryPolicy | None = None, queue: str | None = None,
                    handles: Iterable[StepHandle] = (), description: str = "",
                    map: MapDef | dict[str, Any] | None = None,
                    **inputs: Any) -> StepHandle:
        """Add a sub-workflow step: it runs the cataloged workflow ``workflow`` (a name,
        or the definition itself) as a child run and waits for it, holding no worker slot
        (see :mod:`orchestrator.core.subworkflows`); its output is the child's.

        Args:
            version: the child's version; default the one the catalog holds when this
                workflow loads (pinned then).
            retry: a failed child run is retried as a new child run.
            after, when, trigger_rule, queue, handles, description: as in :meth:`step`.
            map: one child run per item of a list (as in :meth:`step`), the item in the
                child's input field ``as``; the step's output is the children's outputs
                in item order.
            **inputs: the child run's input, by field: literals, ``wf.input.x`` or
                ``handle.output.x``.
        """
        name = workflow if isinstance(workflow, str) else workflow.name
        handle = StepHandle(id, self)
        for h in handles:
            h.on_failure.append(id)
        fields: dict[str, Any] = {
            "id": id, "function": SUBWORKFLOW_FUNCTION, "description": description,
            "inputs": {k: _source(v) for k, v in inputs.items()},
            "after": tuple(h.id for h in after),
            "when": None if when is None else _cond_text(when),
            "trigger_rule": TriggerRule(trigger_rule), "queue": queue,
            "workflow": SubWorkflowDef(name=name, version=version),
        }
        if retry is not None:
            fields["retry"] = retry
        if map is not None:
            fields["map"] = MapDef.model_validate(map)
        self._steps.append((handle, fields))
        return handle

    def schedule(self, id: str, *, cron: str | None = None, timezone: str = "UTC",
                 every_s: int | None = None, anchor: int = 0, input: Any = None,
                 input_expr: str | None = None, overlap: str = "skip",
                 catch_up: dict[str, Any] | None = None, description: str = "") -> Schedule:
        """Declare a schedule of this workflow and return it, checked.

        Assign the result to a module-level name: the catalog collects every module-level
        :class:`Schedule` of a workflow package (as in YAML's ``schedules:``); the
        scheduler syncs them into the store when it starts.  It is no part of the
        workflow's content (never changes its version).

        Args:
            id: the schedule's id (its runs are ``sched-<id>-<fire time>``).
            cron: a cron expression read in ``timezone``; or ``every_s`` (and ``anchor``).
            input: the run input (JSON); or ``input_expr``, CEL over ``fire`` and
                ``schedule`` (see :mod:`orchestrator.core.schedules`).
            overlap: ``allow``, ``skip``, ``cancel_previous`` or ``queue``.
            catch_up: ``{"policy": "skip" | "latest" | "all", "max": N}``.

        Raises:
            ScheduleInvalid: every problem, each with its fix.
        """
        data: dict[str, Any] = {"id": id, "cron": cron, "timezone": timezone,
                                "every_s": every_s, "anchor": anchor, "input": input,
                                "input_expr": input_expr, "overlap": overlap,
                                "description": description}
        if catch_up is not None:
            data["catch_up"] = catch_up
        return schedule_from_data(data, self.name, f"workflow {self.name!r}")

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
                         concurrency=self.concurrency, steps=steps)
        return check(wf, registry) if validate else wf
