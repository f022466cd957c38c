"""The docs stay true: no file outside the repository, every file they name exists, and
every workflow version they quote is the version the code computes today."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.runtime.catalog import discover

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
PACKAGES = ("core", "store", "runtime", "api", "cli", "dev", "callbacks")
THIRD_PARTY = ("celery/", "kombu/", "flower/", "redis/", "billiard/")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_name_no_file_outside_the_repository(doc: Path) -> None:
    bad = re.findall(r"(/work/\S*|\bshared/\S*|\.\./\S*)", _text(doc))
    assert not bad, f"{doc.name} names files outside the repository: {bad}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_file_the_docs_name_exists(doc: Path) -> None:
    missing = []
    for ref in re.findall(r"`([A-Za-z_][\w./-]*\.(?:py|lua|md|sh|yaml|yml|toml))", _text(doc)):
        candidates = [ROOT / ref]
        if ref.split("/")[0] in PACKAGES:
            candidates.append(ROOT / "orchestrator" / ref)
        if "/" not in ref or ref.startswith(THIRD_PARTY):
            continue  # a bare file name: read in the context of its section
        if not any(c.exists() for c in candidates):
            missing.append(ref)
    assert not missing, f"{doc.name} names files that do not exist: {missing}"


def test_quoted_workflow_versions_are_current() -> None:
    versions = {wf.version for wf in discover(["workflows"]).workflows.values()}
    for doc in DOCS:
        for quoted in re.findall(r"version[^`\n]{0,40}`([0-9a-f]{16})`", _text(doc)):
            assert quoted in versions, f"{doc.name} quotes version {quoted}, not current"


def test_only_the_store_holds_a_redis_client_for_run_data() -> None:
    """Outside orchestrator/store/ (and dev/, which runs its own Redis server), no module
    of the product imports redis: run data goes through the store's interface."""
    offenders = []
    for path in sorted([*(ROOT / "orchestrator").rglob("*.py"), *(ROOT / "workers").rglob("*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(("orchestrator/store/", "orchestrator/dev/")):
            continue
        if re.search(r"^\s*(import redis|from redis)\b", _text(path), re.M):
            offenders.append(rel)
    assert not offenders, offenders
