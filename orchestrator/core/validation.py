"""Validation of a workflow when it loads: every problem at once, each with its fix."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from orchestrator.core import concurrency, maps, ratelimits, subworkflows
from orchestrator.core.compensation import COMPENSATE_PARAMS
from orchestrator.core.conditions import Condition, parse
from orchestrator.core.gcpause import gc_paused
from orchestrator.core.models import Ref, StepDef, Value, WorkflowDef
from orchestrator.core.registry import Registry, StepFunction, default_registry
from orchestrator.core.subworkflows import SUBWORKFLOW_FUNCTION, UNDO_FUNCTION
from orchestrator.core.typecheck import (
    compatible,
    literal_fits,
    output_type,
    schema_type,
    type_name,
)
from orchestrator.core.waits import WAIT_FUNCTION
from orchestrator.core.waits import problems as wait_problems
from orchestrator.errors import ConditionError, Problem, WorkflowInvalid


def check(wf: WorkflowDef, registry: Registry | None = None) -> WorkflowDef:
    """Validate ``wf`` and return it unchanged.

    Raises:
        WorkflowInvalid: with every problem found.
    """
    problems = problems_of(wf, registry)
    if problems:
        raise WorkflowInvalid(wf.name, problems)
    return wf


def problems_of(wf: WorkflowDef, registry: Registry | None = None) -> list[Problem]:
    """Return every problem of ``wf`` (empty when it is valid)."""
    with gc_paused():  # a 50,000-step workflow: see gcpause
        return _problems_of(wf, registry)


def _problems_of(wf: WorkflowDef, registry: Registry | None) -> list[Problem]:
    reg = registry if registry is not None else default_registry
    out: list[Problem] = []

    def add(code: str, message: str, fix: str, step: str | None = None) -> None:
        out.append(Problem(code, message, fix, wf.name, step))

    if not wf.steps:
        add("no_steps", "the workflow has no steps.", "add at least one step.")
    try:
        Draft202012Validator.check_schema(wf.input_schema)
    except SchemaError as exc:
        add("bad_input_schema", f"input_schema is not a valid JSON Schema: {exc.message}.",
            "correct input_schema (JSON Schema draft 2020-12).")

    ids = {s.id for s in wf.steps}
    if len(ids) < len(wf.steps):  # else no id repeats, and this loop would add nothing
        ids = set()
        for s in wf.steps:
            if s.id in ids:
                add("duplicate_step", f"step id {s.id!r} is used more than once.",
                    "give every step a unique id.", s.id)
            ids.add(s.id)

    # Each check below is called only where it can find something (each callee returns
    # at once, empty-handed, where it is not called): at 50,000 steps the calls add up.
    check_refs = _names_unknown_step(wf, ids)
    for s in wf.steps:
        if check_refs:
            _check_references(s, ids, add)
        if s.retry is not _DEFAULT_RETRY or s.soft_timeout_s is not None \
                or s.timeout_s is not None:
            _check_policies(s, add)
        if s.compensate is not None:
            _check_compensate(s, reg, add)
        if s.rate_limit is not None:
            for message, fix in ratelimits.problems(s):
                add("bad_rate_limit", f"rate_limit: {message}", fix, s.id)
        if s.workflow is not None or s.function in _SUBWORKFLOW_FUNCTIONS:
            for message, fix in subworkflows.step_problems(s):
                add("bad_subworkflow", message, fix, s.id)
        if s.concurrency is not None:
            for message, fix in concurrency.problems(s.concurrency, s):
                add("bad_concurrency", f"concurrency: {message}", fix, s.id)
    for message, fix in concurrency.problems(wf.concurrency):
        add("bad_concurrency", f"concurrency: {message}", fix)

    conditions = _parse_conditions(wf, ids, add)
    reads = _check_waits(wf, ids, add)
    for s in wf.steps:  # a map's `over` reads ancestors as a wait's expressions do
        if s.map is not None:
            try:
                found = maps.reads(s.map)
            except ConditionError:
                continue  # reported by maps.problems
            for ref in sorted(found - ids):
                add("unknown_step", f"map.over reads unknown step {ref!r}.",
                    "use the id of an ancestor step.", s.id)
            reads[s.id] = reads.get(s.id, frozenset()) | found
    graph = wf.graph
    cycle = graph.find_cycle()
    if cycle:
        add("cycle", f"the steps form a cycle: {' -> '.join(cycle)}.",
            "remove one of these dependencies (an input reference, 'after' or "
            "'on_failure' entry).", cycle[0])
    elif conditions or reads:
        for s in wf.steps:
            cond = conditions.get(s.id)
            for ref in sorted(cond.steps if cond else ()):
                if ref in ids and ref != s.id and not graph.is_ancestor(ref, s.id):
                    add("not_ancestor",
                        f"condition reads step {ref!r}, which is not an ancestor.",
                        f"add {ref!r} to this step's 'after' list, or read another step.",
                        s.id)
                elif ref == s.id:
                    add("not_ancestor", "condition reads the step's own output.",
                        "a condition can only read ancestors' outputs.", s.id)
            for ref in sorted(reads.get(s.id, ())):
                if ref in ids and (ref == s.id or not graph.is_ancestor(ref, s.id)):
                    add("not_ancestor",
                        f"the wait's expression reads step {ref!r}, which is not an "
                        "ancestor.",
                        f"add {ref!r} to this step's 'after' list, or read another step.",
                        s.id)

    for s in wf.steps:
        if s.wait is not None or s.function == WAIT_FUNCTION:
            continue  # a wait step calls no function (_check_waits)
        if s.workflow is not None or s.function in (SUBWORKFLOW_FUNCTION, UNDO_FUNCTION):
            continue  # its inputs are the child run's input (subworkflows.pin checks them)
        fn = reg.get(s.function)
        if fn is None:
            add("unknown_function", f"step function {s.function!r} is not registered.",
                "register it with @step_function(" + repr(s.function) + ") and import "
                "its module before loading the workflow, or fix the name.", s.id)
            continue
        if fn.params or s.inputs:  # else nothing to compare
            _check_types(wf, s, fn, reg, add)
    for s in wf.steps:
        if s.map is not None:
            fn = reg.get(s.function)
            for code, message, fix in maps.problems(
                    s, dict(fn.params) if fn is not None else None,
                    fn.accepts_any_kwargs if fn is not None else False):
                add(code, message, fix, s.id)
    return out


_SUBWORKFLOW_FUNCTIONS = (SUBWORKFLOW_FUNCTION, UNDO_FUNCTION)


def _names_unknown_step(wf: WorkflowDef, ids: set[str]) -> bool:
    """Whether any step's inputs, ``after`` or ``on_failure`` name a step not in ``ids``
    (only then can :func:`_check_references` find something)."""
    named: set[str] = set().union(*[s.after for s in wf.steps],
                                  *[s.on_failure for s in wf.steps if s.on_failure])
    named.update(src.step for s in wf.steps if s.inputs for src in s.inputs.values()
                 if isinstance(src, Ref) and src.step is not None)
    return not named <= ids


def _check_references(s: StepDef, ids: set[str], add: Any) -> None:
    for name, src in s.inputs.items():
        if isinstance(src, Ref) and src.step is not None and src.step not in ids:
            add("unknown_step", f"input {name!r} reads unknown step {src.step!r}.",
                "use the id of a step of this workflow.", s.id)
    for dep in s.after:
        if dep not in ids:
            add("unknown_step", f"'after' names unknown step {dep!r}.",
                "use the id of a step of this workflow.", s.id)
    for h in s.on_failure:
        if h not in ids:
            add("unknown_step", f"'on_failure' names unknown step {h!r}.",
                "define the handler step, or fix its id.", s.id)


def _check_policies(s: StepDef, add: Any) -> None:
    r = s.retry
    if r is _DEFAULT_RETRY and s.soft_timeout_s is None and s.timeout_s is None:
        return  # the defaults are valid: the common case, at 50,000 steps
    if r.max_attempts < 1:
        add("bad_retry", f"retry.max_attempts is {r.max_attempts}.",
            "set max_attempts to 1 (no retry) or more.", s.id)
    if r.initial_backoff_s < 0 or r.max_backoff_s < 0:
        add("bad_retry", "retry backoff is negative.", "use backoffs of 0 s or more.", s.id)
    elif r.max_backoff_s < r.initial_backoff_s:
        add("bad_retry",
            f"retry.max_backoff_s ({r.max_backoff_s}) < initial_backoff_s "
            f"({r.initial_backoff_s}).", "raise max_backoff_s or lower initial_backoff_s.",
            s.id)
    if r.multiplier < 1:
        add("bad_retry", f"retry.multiplier is {r.multiplier}.", "use 1 or more.", s.id)
    if not 0 <= r.jitter <= 1:
        add("bad_retry", f"retry.jitter is {r.jitter}.",
            "use a fraction between 0 and 1.", s.id)
    for name, v in (("soft_timeout_s", s.soft_timeout_s), ("timeout_s", s.timeout_s)):
        if v is not None and v <= 0:
            add("bad_timeout", f"{name} is {v}.", f"set {name} above 0, or omit it.", s.id)
    if (s.soft_timeout_s and s.timeout_s and s.soft_timeout_s > 0 and s.timeout_s > 0
            and s.soft_timeout_s >= s.timeout_s):
        add("bad_timeout",
            f"soft_timeout_s ({s.soft_timeout_s}) is not below timeout_s ({s.timeout_s}).",
            "make the soft timeout shorter than the hard one.", s.id)


def _check_compensate(s: StepDef, reg: Registry, add: Any) -> None:
    """A compensation: a registered function taking ``input`` and ``output``, with a sane
    retry policy and time limits; a wait step has nothing to undo."""
    c = s.compensate
    assert c is not None

    def add_c(code: str, message: str, fix: str, step: str | None = None) -> None:
        add(code, f"compensate: {message}", fix, step)

    if s.wait is not None:
        add_c("bad_compensate", "a wait step does nothing that can be undone.",
              "remove 'compensate' from the wait step.", s.id)
    _check_policies(StepDef(id=s.id, function=c.function, retry=c.retry,
                            soft_timeout_s=c.soft_timeout_s, timeout_s=c.timeout_s), add_c)
    fn = reg.get(c.function)
    if fn is None:
        add_c("unknown_function", f"step function {c.function!r} is not registered.",
              "register it with @step_function(" + repr(c.function) + ") and import its "
              "module before loading the workflow, or fix the name.", s.id)
        return
    missing = [p for p in COMPENSATE_PARAMS if p not in fn.params and not fn.accepts_any_kwargs]
    extra = [p.name for p in fn.params.values() if p.required and p.name not in COMPENSATE_PARAMS]
    if missing or extra:
        why = f"lacks {', '.join(missing)}" if missing else f"also requires {', '.join(extra)}"
        add_c("bad_compensate",
              f"function {c.function!r} must take the parameters 'input' and 'output' "
              f"(it {why}).",
              "define it as def undo(input: dict[str, Any], output: <the step's output "
              "type>) -> None.", s.id)


_DEFAULT_RETRY = StepDef.model_fields["retry"].default
"""The one policy instance every step without its own ``retry`` shares."""


def _parse_conditions(wf: WorkflowDef, ids: set[str], add: Any) -> dict[str, Condition]:
    out: dict[str, Condition] = {}
    for s in wf.steps:
        if s.when is None:
            continue
        try:
            cond = parse(s.when)
        except ConditionError as exc:
            add("bad_condition", f"'when' {exc}.",
                "write a CEL boolean expression over 'input' and 'steps.<id>.output'.", s.id)
            continue
        for ref in sorted(cond.steps - ids):
            add("unknown_step", f"condition reads unknown step {ref!r}.",
                "use the id of an ancestor step.", s.id)
        out[s.id] = cond
    return out


def _check_waits(wf: WorkflowDef, ids: set[str], add: Any) -> dict[str, frozenset[str]]:
    """Check the wait steps; return the steps each wait's expressions read."""
    reads: dict[str, frozenset[str]] = {}
    for s in wf.steps:
        if s.wait is None:
            if s.function == WAIT_FUNCTION:
                add("bad_wait", f"function {WAIT_FUNCTION!r} is only for wait steps.",
                    "give the step a 'wait' (kind: sleep, until, event or approval), or "
                    "another function.", s.id)
            continue
        if s.function != WAIT_FUNCTION:
            add("bad_wait", f"a wait step calls no function, but names {s.function!r}.",
                f"remove 'function' (it is {WAIT_FUNCTION!r}), or remove 'wait'.", s.id)
        if s.inputs:
            add("bad_wait", "a wait step takes no inputs.",
                "remove 'inputs'; a wait's expressions read 'input' and "
                "'steps.<id>.output' themselves.", s.id)
        for message, fix in wait_problems(s.wait):
            add("bad_wait", message, fix, s.id)
        found: set[str] = set()
        for name, text in s.wait.expressions().items():
            try:
                found |= parse(text).steps
            except ConditionError as exc:
                add("bad_condition", f"wait.{name} {exc}.",
                    "write a CEL expression over 'input' and 'steps.<id>.output'.", s.id)
        for ref in sorted(found - ids):
            add("unknown_step", f"the wait's expression reads unknown step {ref!r}.",
                "use the id of an ancestor step.", s.id)
        reads[s.id] = frozenset(found)
    return reads


def _check_types(wf: WorkflowDef, s: StepDef, fn: StepFunction, reg: Registry,
                 add: Any) -> None:
    for name, p in fn.params.items():
        if p.required and name not in s.inputs and not (s.map and name == s.map.as_):
            add("missing_input", f"step function {fn.name!r} needs input {name!r}.",
                f"add '{name}' to the step's inputs.", s.id)
    for name, src in s.inputs.items():
        param = fn.params.get(name)
        if param is None:
            if not fn.accepts_any_kwargs:
                add("unknown_input",
                    f"step function {fn.name!r} has no parameter {name!r}.",
                    f"remove it, or use one of: {', '.join(fn.params) or '(none)'}.", s.id)
            continue
        if isinstance(src, Value):
            reason = literal_fits(src.value, param.annotation)
            if reason:
                add("type_mismatch",
                    f"literal for input {name!r} does not fit "
                    f"{type_name(param.annotation)}: {reason}.",
                    "change the literal value.", s.id)
            continue
        if src.step is None:
            src_t = schema_type(wf.input_schema, src.path)
            origin = "the workflow's input_schema"
        else:
            producer = wf.step_map.get(src.step)
            pfn = reg.get(producer.function) if producer else None
            if pfn is None:
                continue
            out_t = pfn.output if producer is None or producer.map is None \
                else maps.output_type(pfn.output)
            src_t = output_type(out_t, src.path)
            origin = f"step {src.step!r} (function {pfn.name!r})"
        if src_t is None:
            add("type_mismatch", f"input {name!r} reads {src.source!r}, a field that "
                f"{origin} does not have.", "read an existing field.", s.id)
        elif not compatible(src_t, param.annotation):
            add("type_mismatch",
                f"input {name!r} reads {src.source!r} of type {type_name(src_t)} from "
                f"{origin}, but the parameter is {type_name(param.annotation)}.",
                "read a field of the right type, or change the parameter's type.", s.id)
