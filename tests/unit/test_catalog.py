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
    assert len(order.steps) == 11
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


def test_one_bad_file_breaks_no_other_workflow(tmp_path: Path, registry: Registry,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "mixedpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.yaml").write_text("name: good\nsteps:\n  - {id: a, function: t.noop}\n")
    (pkg / "latin1.yaml").write_bytes("name: caf\xe9\nsteps: []\n".encode("latin-1"))
    (pkg / "broken.yaml").write_text("name: [unclosed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cat = discover(["mixedpkg"], registry)
    assert set(cat.workflows) == {"good"}
    assert {Path(p).name for p in cat.broken} == {"latin1.yaml", "broken.yaml"}
    assert "not UTF-8" in cat.broken[str(pkg / "latin1.yaml")]
    with pytest.raises(WorkflowNotFound, match=r"latin1\.yaml could not be loaded"):
        cat.get("café")


def test_the_catalog_applies_its_limits(tmp_path: Path, registry: Registry) -> None:
    from orchestrator.core.yamlio import Limits

    path = tmp_path / "three.yaml"
    path.write_text("name: three\nsteps:\n" + "".join(
        f"  - {{id: s{i}, function: t.noop}}\n" for i in range(3)))
    with pytest.raises(DefinitionError, match="3 steps, more than the 2"):
        Catalog(registry, limits=Limits(max_steps=2)).resolve(str(path))
