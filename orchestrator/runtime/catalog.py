"""Finding workflows: by name in the configured packages, or by YAML path.

Importing a workflow package registers its step functions; every module-level
:class:`WorkflowDef` and every ``*.yaml`` file inside the package is a workflow.  A name
defined twice (say in YAML and in the DSL) must describe the same workflow.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core.models import WorkflowDef
from orchestrator.core.registry import Registry, default_registry
from orchestrator.core.schedules import Schedule
from orchestrator.core.subworkflows import pin
from orchestrator.core.triggers import TriggerDef
from orchestrator.core.triggers import check as check_trigger
from orchestrator.core.validation import check
from orchestrator.core.yamlio import (
    DEFAULT_LIMITS,
    Limits,
    load_yaml,
    parse_schedules,
    parse_triggers,
    parse_yaml,
    read_text,
)
from orchestrator.errors import (
    DefinitionError,
    TriggerNotFound,
    WorkflowInvalid,
    WorkflowNotFound,
)
from orchestrator.settings import Settings

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Demo:
    """A ready-made run of a workflow for ``orchestrator demo``: its input, and how to set
    up the stand-in systems its steps talk to.

    A workflow package declares one at module level; :func:`discover` collects it.
    """

    workflow: str
    input: dict[str, Any]
    prepare: Callable[[Any], None] | None = None
    """Called with the Redis client step functions get (``StepContext.redis``)."""


@dataclass
class Catalog:
    """Workflows by name, each validated against ``registry``."""

    registry: Registry = field(default_factory=lambda: default_registry)
    workflows: dict[str, WorkflowDef] = field(default_factory=dict)
    sources: dict[str, list[str]] = field(default_factory=dict)
    demos: dict[str, Demo] = field(default_factory=dict)
    triggers: dict[str, TriggerDef] = field(default_factory=dict)
    """Event triggers by name (``triggers:`` in YAML, module-level ``TriggerDef`` s)."""
    trigger_sources: dict[str, str] = field(default_factory=dict)
    schedules: dict[str, Schedule] = field(default_factory=dict)
    """Declared schedules by id (``schedules:`` in YAML, module-level ``Schedule`` s): the
    scheduler syncs them into the store when it starts."""
    schedule_sources: dict[str, str] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)
    """Definition files left out, by path: why each could not be loaded."""
    limits: Limits = DEFAULT_LIMITS
    """How big a definition file may be (:func:`limits_of` the settings)."""

    def add(self, wf: WorkflowDef, source: str) -> None:
        """Add a workflow.

        Raises:
            DefinitionError: another, different workflow already has this name.
        """
        have = self.workflows.get(wf.name)
        if have is not None and have.version != wf.version:
            raise DefinitionError(
                f"workflow {wf.name!r} is defined twice with different content: "
                f"{self.sources[wf.name][0]} and {source}; rename one or make them equal"
            )
        self.workflows[wf.name] = wf
        self.sources.setdefault(wf.name, []).append(source)

    def add_trigger(self, td: TriggerDef, source: str) -> None:
        """Add an event trigger, its expressions checked.

        Raises:
            TriggerInvalid: an expression does not parse.
            DefinitionError: another, different trigger already has this name.
        """
        check_trigger(td)
        have = self.triggers.get(td.name)
        if have is not None and have != td:
            raise DefinitionError(
                f"trigger {td.name!r} is defined twice with different content: "
                f"{self.trigger_sources[td.name]} and {source}; rename one or make them "
                "equal")
        self.triggers[td.name] = td
        self.trigger_sources.setdefault(td.name, source)

    def add_schedule(self, s: Schedule, source: str) -> None:
        """Add a declared schedule.

        Raises:
            DefinitionError: another, different schedule already has this id.
        """
        have = self.schedules.get(s.id)
        if have is not None and have != s:
            raise DefinitionError(
                f"schedule {s.id!r} is declared twice with different content: "
                f"{self.schedule_sources[s.id]} and {source}; rename one or make them equal")
        self.schedules[s.id] = s
        self.schedule_sources.setdefault(s.id, source)

    def trigger(self, name: str) -> TriggerDef:
        """Return the event trigger called ``name``.

        Raises:
            TriggerNotFound: listing the names that exist.
        """
        try:
            return self.triggers[name]
        except KeyError:
            known = ", ".join(sorted(self.triggers)) or "(none)"
            raise TriggerNotFound(f"no trigger named {name!r}; known triggers: {known}"
                                  ) from None

    def get(self, name: str) -> WorkflowDef:
        """Return the workflow called ``name``.

        Raises:
            WorkflowNotFound: listing the names that exist.
        """
        try:
            return self.workflows[name]
        except KeyError:
            known = ", ".join(sorted(self.workflows)) or "(none)"
            broken = "".join(f"; {src} could not be loaded: {why.splitlines()[0]}"
                             for src, why in sorted(self.broken.items()))
            raise WorkflowNotFound(
                f"no workflow named {name!r}; known workflows: {known}{broken}"
            ) from None

    def resolve(self, name_or_path: str) -> WorkflowDef:
        """A YAML path (validated now) or the name of a cataloged workflow."""
        p = Path(name_or_path)
        if p.suffix in (".yaml", ".yml") or p.is_file():
            return load_yaml(p, self.registry, self.limits)
        return self.get(name_or_path)


def discover(packages: Iterable[str], registry: Registry | None = None,
             limits: Limits = DEFAULT_LIMITS) -> Catalog:
    """Import ``packages`` and their submodules and collect their workflows.

    A YAML file that cannot be loaded (too large, not UTF-8, not YAML, invalid) is left
    out and recorded in :attr:`Catalog.broken`, so one bad file breaks no other
    workflow; asking for a workflow that is not there names the broken files.

    Raises:
        DefinitionError: a package cannot be imported, or a Python module of it defines
            an invalid workflow (code that does not import has no half to keep).
    """
    cat = Catalog(registry or default_registry, limits=limits)
    for pkg_name in packages:
        try:
            pkg = importlib.import_module(pkg_name)
        except ImportError as exc:
            raise DefinitionError(
                f"cannot import workflow package {pkg_name!r}: {exc}; fix ORCH_WORKFLOW_"
                "PACKAGES or install the package") from exc
        modules = [pkg]
        for info in pkgutil.walk_packages(getattr(pkg, "__path__", []), pkg_name + "."):
            modules.append(importlib.import_module(info.name))
        for mod in modules:
            for value in vars(mod).values():
                if isinstance(value, WorkflowDef):
                    cat.add(check(value, cat.registry), mod.__name__)
                elif isinstance(value, Demo):
                    cat.demos.setdefault(value.workflow, value)
                elif isinstance(value, TriggerDef):
                    cat.add_trigger(value, mod.__name__)
                elif isinstance(value, Schedule):
                    cat.add_schedule(value, mod.__name__)
        for base in getattr(pkg, "__path__", []):
            for path in sorted(Path(base).rglob("*.y*ml")):
                try:
                    _add_file(cat, path, limits)
                except DefinitionError as exc:  # one bad file must not hide the others
                    cat.broken[str(path)] = str(exc)
                    log.warning("workflow file skipped: %s", exc)
    pin_children(cat)
    return cat


def pin_children(cat: Catalog) -> None:
    """Check the catalog's sub-workflow steps and pin their children's versions
    (:func:`orchestrator.core.subworkflows.pin`); a workflow whose sub-workflows are
    wrong (unknown, a cycle, an input against the child's schema) is left out and
    recorded in :attr:`Catalog.broken`, as a file that does not load."""
    pinned, problems = pin(cat.workflows)
    for name, found in problems.items():
        why = str(WorkflowInvalid(name, found))
        for src in cat.sources.get(name, [name]):
            cat.broken[src] = why
        log.warning("workflow left out: %s", why)
    cat.workflows = {n: pinned[n] for n in cat.workflows if n in pinned}


def _add_file(cat: Catalog, path: Path, limits: Limits) -> None:
    """Add one YAML file's workflow, triggers and schedules (all or nothing)."""
    text = read_text(path, limits)
    source = str(path)
    wf = check(parse_yaml(text, source, limits), cat.registry)
    triggers = parse_triggers(text, source, limits)
    schedules = parse_schedules(text, source, limits)
    for td in triggers:
        check_trigger(td)
    cat.add(wf, source)
    for td in triggers:
        cat.add_trigger(td, source)
    for sd in schedules:
        cat.add_schedule(sd, source)


def limits_of(settings: Settings) -> Limits:
    """The definition limits the settings ask for."""
    return Limits(max_bytes=settings.definition_max_bytes,
                  max_steps=settings.definition_max_steps)

