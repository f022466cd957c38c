"""Worker entry point of the raw Celery peer: ``celery -A bench.raw_main worker -Q bench_raw``."""

from __future__ import annotations

from bench.raw import create_app
from orchestrator.settings import Settings

app = create_app(Settings())
