"""Workflows as YAML: safe loading into :class:`WorkflowDef`, and dumping back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from orchestrator.core.models import WorkflowDef
from orchestrator.core.registry import Registry
from orchestrator.core.schedules import Schedule
from orchestrator.core.schedules import parse_list as parse_schedule_list
from orchestrator.core.triggers import TriggerDef
from orchestrator.core.triggers import check as check_trigger
from orchestrator.core.triggers import from_data as trigger_from_data
from orchestrator.core.validation import check
from orchestrator.errors import DefinitionError, Problem, WorkflowInvalid

# libyaml's safe loader and dumper when PyYAML was built with it (several times faster),
# else the pure-Python ones; both accept only standard tags.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@dataclass(frozen=True)
class Limits:
    """How big a workflow definition may be: what a hostile or broken file can cost is
    bounded before it is parsed (size), while it is (aliases expanded, nesting) and before
    it is validated (steps).  ``Settings.definition_max_bytes`` and
    ``definition_max_steps`` set them (:func:`orchestrator.runtime.catalog.limits_of`)."""

    max_bytes: int = 1024 * 1024
    max_steps: int = 10_000
    max_depth: int = 64
    """Deepest nesting of mappings and lists."""

    @property
    def max_nodes(self) -> int:
        """Most YAML nodes once every alias is expanded (an alias bomb expands to
        billions from a kilobyte)."""
        return max(100_000, 40 * self.max_steps)


DEFAULT_LIMITS = Limits()


def read_text(path: str | Path, limits: Limits = DEFAULT_LIMITS) -> str:
    """A definition file's text, refused before it is read if it is too large.

    Raises:
        DefinitionError: unreadable, larger than ``limits.max_bytes``, or not UTF-8.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > limits.max_bytes:
            raise DefinitionError(
                f"{p}: {size:,} bytes, more than the {limits.max_bytes:,} a workflow file "
                "may have. Fix: split it, or raise ORCH_DEFINITION_MAX_BYTES")
        raw = p.read_bytes()
    except OSError as exc:
        raise DefinitionError(f"cannot read workflow file {p}: {exc.strerror}") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DefinitionError(
            f"{p}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}, line "
            f"{line}). Fix: save the file as UTF-8") from None


def _load(text: str, source: str, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Parse YAML with the standard tags only, within ``limits``.

    Raises:
        DefinitionError: not YAML, too large, nested too deep, or its aliases expand
            past ``limits.max_nodes``.
    """
    if len(text) > limits.max_bytes:
        raise DefinitionError(f"{source}: more than the {limits.max_bytes:,} bytes a "
                              "workflow definition may have. Fix: split it, or raise "
                              "ORCH_DEFINITION_MAX_BYTES")
    loader = _LOADER(text)  # safe: standard tags only
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node, limits, source)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise DefinitionError(f"{source}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def _check_nodes(root: yaml.Node, limits: Limits, source: str) -> None:
    """Refuse a node graph whose expansion (aliases share nodes) is too big or too deep,
    or that holds itself (a recursive alias, ``a: &a [*a]``: PyYAML builds such a value,
    and validating it would never end); linear in the number of distinct nodes, without
    recursion."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    entered: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if key in size:
            continue
        if not done:
            if key in entered:  # pushed by a node below it, before it was done: a cycle
                raise DefinitionError(
                    f"{source}: line {node.start_mark.line + 1}: an alias refers to a node "
                    "that contains it (a recursive alias). Fix: write the definition "
                    "without it")
            entered.add(key)
        kids: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            kids = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            kids = list(node.value)
        if not done:
            stack.append((node, True))
            stack.extend((k, False) for k in kids if id(k) not in size)
            continue
        size[key] = 1 + sum(size[id(k)] for k in kids)
        depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
        if size[key] > limits.max_nodes:
            raise DefinitionError(
                f"{source}: its aliases expand to more than {limits.max_nodes:,} YAML "
                "nodes (an alias bomb?). Fix: write the definition without nested "
                "aliases")
        if depth[key] > limits.max_depth:
            raise DefinitionError(f"{source}: nested deeper than {limits.max_depth} "
                                  "levels. Fix: flatten it")


def parse_yaml(text: str, source: str = "<yaml>", limits: Limits = DEFAULT_LIMITS
               ) -> WorkflowDef:
    """Parse YAML text into a model, without the registry-dependent checks.

    Raises:
        DefinitionError: the text is not YAML, not a mapping, or past ``limits``.
        WorkflowInvalid: fields are missing, unknown or of the wrong type.
    """
    data = _load(text, source, limits)
    if not isinstance(data, dict):
        raise DefinitionError(f"{source}: a workflow file must be a YAML mapping")
    return from_data(data, source, limits)


def from_data(data: dict[str, Any], source: str = "<data>",
              limits: Limits = DEFAULT_LIMITS) -> WorkflowDef:
    """Build a model from plain data (parsed YAML or an API body).

    Raises:
        DefinitionError: more steps than ``limits.max_steps``.
        WorkflowInvalid: every field problem pydantic found, with its location.
    """
    steps = data.get("steps")
    if isinstance(steps, list) and len(steps) > limits.max_steps:
        raise DefinitionError(
            f"{source}: {len(steps):,} steps, more than the {limits.max_steps:,} a workflow "
            "may have. Fix: split it into sub-workflows, or raise ORCH_DEFINITION_MAX_STEPS")
    try:
        # triggers: and schedules: sit beside the workflow and are no part of its content
        # (its version)
        return WorkflowDef.model_validate({k: v for k, v in data.items()
                                           if k not in ("triggers", "schedules")})
    except ValidationError as exc:
        name = str(data.get("name", source))
        steps = data.get("steps")
        problems = []
        for err in exc.errors():
            loc = err["loc"]
            step = None
            if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int) \
                    and isinstance(steps, list) and loc[1] < len(steps) \
                    and isinstance(steps[loc[1]], dict):
                step = str(steps[loc[1]].get("id", f"#{loc[1]}"))
            where = ".".join(str(p) for p in loc)
            problems.append(Problem("bad_field", f"{where}: {err['msg']}.",
                                    "correct the field as the message says.", name, step))
        raise WorkflowInvalid(name, problems) from None


def load_yaml(path: str | Path, registry: Registry | None = None,
              limits: Limits = DEFAULT_LIMITS) -> WorkflowDef:
    """Load and validate a workflow file.

    Raises:
        DefinitionError: unreadable, too large, not UTF-8, not YAML, past ``limits``.
        WorkflowInvalid: every problem found.
    """
    p = Path(path)
    text = read_text(p, limits)
    wf = check(parse_yaml(text, str(p), limits), registry)
    for td in parse_triggers(text, str(p), limits):
        check_trigger(td)
    parse_schedules(text, str(p), limits)
    return wf


def parse_schedules(text: str, source: str = "<yaml>", limits: Limits = DEFAULT_LIMITS
                    ) -> tuple[Schedule, ...]:
    """The schedules declared beside a workflow (its ``schedules:`` list), checked (zone,
    cron expression, ``input_expr``); each one's ``workflow`` defaults to the file's.

    Raises:
        DefinitionError: the text is not YAML.  ScheduleInvalid: a schedule is invalid.
    """
    data = _load(text, source, limits)
    if not isinstance(data, dict):
        return ()
    return parse_schedule_list(data.get("schedules"), str(data.get("name", "")), source)


def parse_triggers(text: str, source: str = "<yaml>", limits: Limits = DEFAULT_LIMITS
                   ) -> tuple[TriggerDef, ...]:
    """The event triggers declared beside a workflow (its ``triggers:`` list), shape-checked
    (their expressions are parsed by :func:`orchestrator.core.triggers.check`).

    Raises:
        DefinitionError: the text is not YAML, or ``triggers`` is not a list.
        TriggerInvalid: a trigger's fields are missing, unknown or of the wrong type.
    """
    data = _load(text, source, limits)
    if not isinstance(data, dict) or data.get("triggers") is None:
        return ()
    items = data["triggers"]
    if not isinstance(items, list):
        raise DefinitionError(f"{source}: triggers must be a list of triggers")
    workflow = str(data.get("name", ""))
    return tuple(trigger_from_data(item, workflow, f"{source}: triggers.{i}")
                 for i, item in enumerate(items))


def dump_yaml(wf: WorkflowDef) -> str:
    """Return ``wf`` as YAML that :func:`parse_yaml` reads back to an equal model."""
    data = wf.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    data.setdefault("steps", [])
    text = yaml.dump(data, Dumper=_DUMPER, sort_keys=False, allow_unicode=True)
    if yaml.load(text, Loader=_LOADER) != data:  # safe: standard tags only
        # PyYAML writes some characters raw (NEL, the Unicode line separators) that its
        # reader then folds as line breaks; escaping all non-ASCII keeps them.
        text = yaml.dump(data, Dumper=_DUMPER, sort_keys=False, allow_unicode=False)
    return text
