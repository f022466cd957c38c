"""Fixtures of the unit tests."""

from __future__ import annotations

import pytest

from orchestrator.core.registry import Registry
from tests.unit.fixtures_steps import build_registry


@pytest.fixture
def registry() -> Registry:
    """A fresh registry of the test step functions."""
    return build_registry()
