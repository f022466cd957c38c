"""Workflows as YAML: safe loading into :class:`WorkflowDef`, and dumping back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from orchestrator.core.models import WorkflowDef
from orchestrator.core.registry import Registry
from orchestrator.core.validation import check
from orchestrator.errors import DefinitionError, Problem, WorkflowInvalid

# libyaml's safe loader and dumper when PyYAML was built with it (several times faster),
# else the pure-Python ones; both accept only standard tags.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def parse_yaml(text: str, source: str = "<yaml>") -> WorkflowDef:
    """Parse YAML text into a model, without the registry-dependent checks.

    Raises:
        DefinitionError: the text is not YAML, or not a mapping.
        WorkflowInvalid: fields are missing, unknown or of the wrong type.
    """
    try:
        data = yaml.load(text, Loader=_LOADER)  # safe: standard tags only
    except yaml.YAMLError as exc:
        raise DefinitionError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise DefinitionError(f"{source}: a workflow file must be a YAML mapping")
    return from_data(data, source)


def from_data(data: dict[str, Any], source: str = "<data>") -> WorkflowDef:
    """Build a model from plain data (parsed YAML or an API body).

    Raises:
        WorkflowInvalid: every field problem pydantic found, with its location.
    """
    try:
        return WorkflowDef.model_validate(data)
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


def load_yaml(path: str | Path, registry: Registry | None = None) -> WorkflowDef:
    """Load and validate a workflow file.

    Raises:
        DefinitionError: unreadable file; WorkflowInvalid: every problem found.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise DefinitionError(f"cannot read workflow file {p}: {exc.strerror}") from exc
    return check(parse_yaml(text, str(p)), registry)


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
