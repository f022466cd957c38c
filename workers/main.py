"""Worker entry point: ``celery -A workers.main worker`` (or ``orchestrator worker``)."""

from __future__ import annotations

from orchestrator.settings import Settings
from workers import control  # noqa: F401  (registers the doctor's remote-control command)
from workers.app import create_app

app = create_app(Settings())
