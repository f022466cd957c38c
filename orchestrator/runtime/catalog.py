"""Finding workflows: by name in the configured packages, or by YAML path.

Importing a workflow package registers its step functions; every module-level
:class:`WorkflowDef` and every ``*.yaml`` file inside the package is a workflow.  A name
defined twice (say in YAML and in the DSL) must describe the same workflow.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core.models import WorkflowDef
from orchestrator.core.registry import Registry, default_registry
from orchestrator.core.validation import check
from orchestrator.core.yamlio import load_yaml, parse_yaml
from orchestrator.errors import DefinitionError, WorkflowNotFound


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

    def get(self, name: str) -> WorkflowDef:
        """Return the workflow called ``name``.

        Raises:
            WorkflowNotFound: listing the names that exist.
        """
        try:
            return self.workflows[name]
        except KeyError:
            known = ", ".join(sorted(self.workflows)) or "(none)"
            raise WorkflowNotFound(
                f"no workflow named {name!r}; known workflows: {known}"
            ) from None

    def resolve(self, name_or_path: str) -> WorkflowDef:
        """A YAML path (validated now) or the name of a cataloged workflow."""
        p = Path(name_or_path)
        if p.suffix in (".yaml", ".yml") or p.is_file():
            return load_yaml(p, self.registry)
        return self.get(name_or_path)


def discover(packages: Iterable[str], registry: Registry | None = None) -> Catalog:
    """Import ``packages`` and their submodules and collect their workflows.

    Raises:
        DefinitionError: a package cannot be imported or holds an invalid workflow.
    """
    cat = Catalog(registry or default_registry)
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
        for base in getattr(pkg, "__path__", []):
            for path in sorted(Path(base).rglob("*.y*ml")):
                wf = check(parse_yaml(path.read_text(encoding="utf-8"), str(path)),
                           cat.registry)
                cat.add(wf, str(path))
    return cat

