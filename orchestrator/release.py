"""Which release of the orchestrator this process runs."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

DIST_NAME = "celery-orchestrator"


def current() -> str:
    """The installed version of this package (``unknown`` when run from a bare tree)."""
    try:
        return version(DIST_NAME)
    except PackageNotFoundError:
        return "unknown"
