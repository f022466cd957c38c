"""The one canonical model of a workflow.

YAML files, the Python DSL and the HTTP API all produce a :class:`WorkflowDef`; it is what
we validate, hash for a version, store with each run and compile.  The models only check
shape (types, identifiers); everything that needs the whole workflow or the step-function
registry is checked by :mod:`orchestrator.core.validation`, so that all problems are reported
at once.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)

from orchestrator.core.dag import Graph
from orchestrator.core.subworkflows import SUBWORKFLOW_FUNCTION, SubWorkflowDef
from orchestrator.core.waits import WAIT_FUNCTION, WaitDef
from orchestrator.errors import FailPermanently

STEP_ID = r"^[A-Za-z_][A-Za-z0-9_]*$"
WORKFLOW_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Frozen(BaseModel):
    """Base of every model here: immutable and strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class TriggerRule(StrEnum):
    """When a step runs, given the final states of its parents.

    ``all_success`` (default) runs only if every parent succeeded; a skipped or failed
    parent skips the step, so skips propagate downstream.
    """

    ALL_SUCCESS = "all_success"
    ALL_DONE = "all_done"
    ALL_FAILED = "all_failed"
    ONE_FAILED = "one_failed"
    ONE_SUCCESS = "one_success"
    NONE_FAILED = "none_failed"


class RetryPolicy(Frozen):
    """How a failing step run is retried.

    The delay before attempt ``n + 1`` is ``min(initial_backoff_s * multiplier ** (n - 1),
    max_backoff_s)``, then spread by ``± jitter`` (a fraction of the delay).
    ``non_retryable`` names exception types (``ValueError`` or ``pkg.mod.MyError``) that
    fail the step at once.
    """

    max_attempts: int = 1
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    multiplier: float = 2.0
    jitter: float = 0.1
    non_retryable: tuple[str, ...] = ()

    def allows_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether a step run whose attempt ``attempt`` (1-based) raised ``error`` is tried
        again: attempts are left, the error is not ``FailPermanently`` and no type in its
        MRO is named in ``non_retryable`` (the runtime and the simulation ask this)."""
        if attempt >= self.max_attempts or isinstance(error, FailPermanently):
            return False
        if not self.non_retryable:
            return True
        names = set()
        for cls in type(error).__mro__:
            names.add(cls.__name__)
            names.add(f"{cls.__module__}.{cls.__qualname__}")
        return not names & set(self.non_retryable)

    def delay_s(self, attempt: int, rand: float = 0.5) -> float:
        """Return the delay before the attempt after ``attempt`` (1-based).

        Args:
            attempt: the attempt that just failed, starting at 1.
            rand: a number in ``[0, 1)``; 0.5 gives the un-jittered delay.
        """
        try:
            grown = self.initial_backoff_s * self.multiplier ** max(attempt - 1, 0)
        except OverflowError:  # a late attempt of a long retry policy: past any cap
            grown = math.inf if self.initial_backoff_s > 0 else 0.0
        base = min(grown, self.max_backoff_s)
        return max(0.0, base * (1.0 + self.jitter * (2.0 * rand - 1.0)))


class CompensateDef(Frozen):
    """How a step is undone when its run fails or is cancelled with compensation (a saga).

    ``function`` is a registered step function called with two keyword arguments:
    ``input`` (the step's inputs, as JSON, by parameter name) and ``output`` (the step's
    recorded output).  It runs with its own ``retry`` policy and time limits, on ``queue``
    (default: the step's).  In YAML a bare function name will do:
    ``compensate: inventory.unreserve``.
    """

    function: str
    retry: RetryPolicy = RetryPolicy()
    soft_timeout_s: float | None = None
    timeout_s: float | None = None
    queue: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, v: Any) -> Any:
        return {"function": v} if isinstance(v, str) else v


RATE = r"^\s*(\d+)\s*/\s*(s|m|h)\s*$"
_PERIOD_S = {"s": 1.0, "m": 60.0, "h": 3600.0}


class RateLimitDef(Frozen):
    """A rate limit shared by every worker: at most ``rate`` (``"10/s"``, ``"600/m"``,
    ``"5/h"``) step runs start per ``key``, spaced evenly (a step over budget waits in the
    store, holding no worker slot).  ``key`` is a CEL expression over ``input`` (default:
    the step function's name, so every workflow calling it shares the budget).  In YAML
    the rate alone will do: ``rate_limit: 10/s``."""

    rate: Annotated[str, Field(pattern=RATE)]
    key: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_rate(cls, v: Any) -> Any:
        return {"rate": v} if isinstance(v, str) else v

    @property
    def interval_s(self) -> float:
        """Seconds between two starts (the period over the count; a count of 0 is refused
        by validation)."""
        m = re.match(RATE, self.rate)
        assert m is not None
        count, unit = int(m.group(1)), m.group(2)
        return _PERIOD_S[unit] / count if count else math.inf


class ConcurrencyDef(Frozen):
    """At most ``limit`` runs (on a workflow) or step runs (on a step) at once per
    ``key``, counted in the store for every worker of every host (see
    :mod:`orchestrator.core.concurrency`).  ``key`` is a CEL expression over ``input``
    (``input.customer_id``); ``when_full`` says what a new one does when ``limit`` hold
    the key's slots: ``queue`` (wait, in arrival order, for a slot), ``cancel_newest``
    (the new one ends ``cancelled``) or ``cancel_oldest`` (workflows only: the oldest
    holder is cancelled and the new run takes its slot)."""

    key: str
    limit: Annotated[int, Field(ge=1)]
    when_full: Literal["queue", "cancel_newest", "cancel_oldest"] = "queue"


class MapDef(Frozen):
    """A dynamic fan-out: the step runs once per item of the list ``over`` yields (a CEL
    expression over ``input`` and ``steps.<id>.output`` of ancestors, the variables of a
    condition).  Each item is a step run of its own, ``<step>[<i>]``, that gets the item
    in the step function's parameter ``as`` (default ``item``); at most ``max_parallel``
    run at once (None: all).  The step's output is the list of the items' outputs in item
    order (null for an item that failed).  ``failure_policy``: ``fail_fast`` (the first
    failed item fails the step; items not started end ``cancelled``), ``continue`` (the
    step succeeds, its failures recorded) or ``allow`` (it fails once more than
    ``max_failures`` items failed).  See :mod:`orchestrator.core.maps`."""

    over: str
    as_: str = Field("item", alias="as")
    max_parallel: int | None = None
    failure_policy: Literal["fail_fast", "continue", "allow"] = "fail_fast"
    max_failures: int = 0


class Ref(Frozen):
    """An input taken from the run's input or from an ancestor step's output.

    ``source`` is ``input``, ``input.<field>…``, ``steps.<id>.output`` or
    ``steps.<id>.output.<field>…``.
    """

    source: str = Field(alias="from")

    @field_validator("source")
    @classmethod
    def _check_path(cls, v: str) -> str:
        parse_ref(v)
        return v

    @cached_property
    def step(self) -> str | None:
        """The step this reference reads from, or ``None`` for the run's input."""
        return parse_ref(self.source)[0]

    @cached_property
    def path(self) -> tuple[str, ...]:
        """Field path inside the run input or the step output."""
        return parse_ref(self.source)[1]


class Value(Frozen):
    """A literal JSON value given to a step input."""

    value: JsonValue


InputSource = Ref | Value


def parse_ref(source: str) -> tuple[str | None, tuple[str, ...]]:
    """Split a reference into (step id or ``None`` for the run input, field path).

    Raises:
        ValueError: the text is not ``input[.f…]`` or ``steps.<id>.output[.f…]``.
    """
    parts = source.split(".")
    if not all(_IDENT.fullmatch(p) for p in parts):
        raise ValueError(f"reference {source!r} must be dot-separated identifiers")
    if parts[0] == "input":
        return None, tuple(parts[1:])
    if parts[0] == "steps" and len(parts) >= 3 and parts[2] == "output":
        return parts[1], tuple(parts[3:])
    raise ValueError(
        f"reference {source!r} must start with 'input' or 'steps.<step_id>.output'"
    )


def _normalise_input(v: Any) -> Any:
    """YAML sugar: ``{from: …}`` is a reference, ``{value: …}`` or any other value a literal."""
    if isinstance(v, Ref | Value):
        return v
    if isinstance(v, dict) and len(v) == 1 and ("from" in v or "value" in v):
        return Ref(**v) if "from" in v else Value(**v)
    return Value(value=v)


class StepDef(Frozen):
    """One node of a workflow; it calls one registered step function."""

    id: Annotated[str, Field(pattern=STEP_ID)]
    function: str
    description: str = ""
    inputs: dict[str, InputSource] = Field(default_factory=dict)
    after: tuple[str, ...] = ()
    when: str | None = None
    trigger_rule: TriggerRule = TriggerRule.ALL_SUCCESS
    retry: RetryPolicy = RetryPolicy()
    soft_timeout_s: float | None = None
    timeout_s: float | None = None
    queue: str | None = None
    on_failure: tuple[str, ...] = ()
    wait: WaitDef | None = None
    """A durable wait (sleep, until, event, approval) instead of a step function; its
    ``function`` is then ``orchestrator.wait`` (filled in). See :mod:`.waits`."""
    compensate: CompensateDef | None = None
    """What undoes this step if the run fails or is cancelled with compensation, once it
    has succeeded (see :mod:`orchestrator.core.compensation`)."""
    rate_limit: RateLimitDef | None = None
    """A rate limit across the pool (see :class:`RateLimitDef`)."""
    map: MapDef | None = None
    """Run once per item of a list (see :class:`MapDef`)."""
    workflow: SubWorkflowDef | None = None
    """Another cataloged workflow this step runs as a child run and waits for, instead of
    a step function; its ``function`` is then ``orchestrator.subworkflow`` (filled in).
    See :mod:`.subworkflows`."""
    concurrency: ConcurrencyDef | None = None
    """At most ``limit`` step runs of this step at once per key, across the pool (see
    :class:`ConcurrencyDef`); a step run over the limit waits in the store."""

    @model_validator(mode="before")
    @classmethod
    def _wait_function(cls, v: Any) -> Any:
        if isinstance(v, dict) and v.get("wait") is not None and "function" not in v:
            return {**v, "function": WAIT_FUNCTION}
        if isinstance(v, dict) and v.get("workflow") is not None and "function" not in v:
            return {**v, "function": SUBWORKFLOW_FUNCTION}
        return v

    @field_validator("inputs", mode="before")
    @classmethod
    def _inputs(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        out: dict[Any, Any] = {}
        bad: list[str] = []
        for k, x in v.items():
            try:
                out[k] = _normalise_input(x)
            except ValidationError as exc:  # name the input: pydantic's location cannot
                bad += [f"input {k!r}: {e['msg'].removeprefix('Value error, ')}"
                        for e in exc.errors()]
        if bad:
            raise ValueError("; ".join(bad))
        return out

    def input_steps(self) -> list[str]:
        """Step ids this step reads outputs from, in input order, without repeats."""
        seen: dict[str, None] = {}
        for src in self.inputs.values():
            if isinstance(src, Ref) and src.step is not None:
                seen.setdefault(src.step, None)
        return list(seen)


def _object_schema() -> dict[str, JsonValue]:
    return {"type": "object"}


class WorkflowDef(Frozen):
    """A named, versioned workflow: a DAG of steps."""

    name: Annotated[str, Field(pattern=WORKFLOW_NAME)]
    description: str = ""
    label: str | None = None
    input_schema: dict[str, JsonValue] = Field(default_factory=lambda: _object_schema())
    default_queue: str | None = None
    concurrency: ConcurrencyDef | None = None
    """At most ``limit`` runs of this workflow at once per key (see
    :class:`ConcurrencyDef`): a run holds its slot from its start to its final status."""
    steps: tuple[StepDef, ...]

    @cached_property
    def version(self) -> str:
        """Content hash of the definition (the label does not change it), e.g. ``3f2a…``.

        Fields left at their defaults are not hashed, so spelling a default out changes
        nothing, and a field added to the model later (with a default) keeps every
        existing workflow's version.  Mapping keys are sorted: their order is not content.
        """
        # imported here: hashtext reads this module's models
        from orchestrator.core.hashtext import canonical_text

        return hashlib.sha256(canonical_text(self).encode()).hexdigest()[:16]

    def model_copy(self, *, update: Mapping[str, Any] | None = None,
                   deep: bool = False) -> Self:
        """Copy, dropping the cached :attr:`version`, :attr:`graph` and :attr:`step_map`
        when ``update`` changes fields (pydantic would copy them stale)."""
        copy = super().model_copy(update=update, deep=deep)
        if update:
            for name in ("version", "graph", "step_map"):
                copy.__dict__.pop(name, None)
        return copy

    @cached_property
    def graph(self) -> Graph:
        """The DAG of :meth:`dependencies`, built once and shared by validation, the
        compiler and the renderers (parents that are not steps are left out)."""
        return Graph.from_deps(self.dependencies())

    @cached_property
    def step_map(self) -> dict[str, StepDef]:
        """Steps by id (the last one wins if ids repeat; validation reports repeats)."""
        return {s.id: s for s in self.steps}

    def handlers_of(self) -> dict[str, tuple[str, ...]]:
        """Map each failure-handler step id to the steps whose failure it handles."""
        out: dict[str, list[str]] = {}
        for s in self.steps:
            for h in s.on_failure:
                out.setdefault(h, []).append(s.id)
        return {h: tuple(v) for h, v in out.items()}

    def dependencies(self) -> dict[str, tuple[str, ...]]:
        """Each step's parents: steps it reads from, ``after``, and steps it handles.

        Unknown ids are kept; validation reports them.
        """
        handled = self.handlers_of()
        deps: dict[str, tuple[str, ...]] = {}
        for s in self.steps:
            after = s.after
            if not s.inputs and s.id not in handled:  # the common case, quicker
                deps[s.id] = (after if len(after) < 2 or len(set(after)) == len(after)
                              else tuple(dict.fromkeys(after)))
                continue
            seen: dict[str, None] = dict.fromkeys(s.input_steps())
            seen.update(dict.fromkeys(after))
            seen.update(dict.fromkeys(handled.get(s.id, ())))
            deps[s.id] = tuple(seen)
        return deps

