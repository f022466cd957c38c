"""The catalog: workflows by name from packages and YAML files, by path on demand."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.core.models import WorkflowDef
from orchestrator.core.registry import Registry
from orchestrator.errors import DefinitionError, WorkflowNotFound
from orchestrator.runtime.catalog import Catalog, discover


def wf(function: str = "t.noop") -> WorkflowDef:
    return WorkflowDef.model_validate({"name": "w", "steps": [{"id": "a", "function": function}]})


def test_discover_finds_the_order_workflow_once_from_yaml_and_dsl() -> None:
    cat = discover(["workflows"])
    order = cat.get("customer_order")
    assert len(order.steps) == 9
    sources = cat.sources["customer_order"]
    assert any(s.endswith("customer_order.yaml") for s in sources)
    assert "workflows.order.dsl" in sources


def test_unknown_name_lists_the_known_ones(registry: Registry) -> None:
    cat = Catalog(registry)
    cat.add(wf(), "here")
    with pytest.raises(WorkflowNotFound, match="known workflows: w"):
        cat.get("nope")


def test_same_name_same_content_is_fine(registry: Registry) -> None:
    cat = Catalog(registry)
    cat.add(wf(), "a.yaml")
    cat.add(wf(), "b.py")
    assert cat.sources["w"] == ["a.yaml", "b.py"]


def test_same_name_different_content_is_refused(registry: Registry) -> None:
    cat = Catalog(registry)
    cat.add(wf(), "a.yaml")
    with pytest.raises(DefinitionError, match="defined twice with different content"):
        cat.add(wf("t.shout"), "b.py")


def test_resolve_by_path_validates_with_the_catalog_registry(
        tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nsteps:\n  - {id: a, function: t.noop}\n")
    assert Catalog(registry).resolve(str(path)).name == "mine"


def test_unimportable_package() -> None:
    with pytest.raises(DefinitionError, match="cannot import workflow package"):
        discover(["no_such_package_here"])
