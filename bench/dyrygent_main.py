"""Worker entry point of the celery-dyrygent peer: ``celery -A bench.dyrygent_main worker
-Q bench_dyrygent``."""

from __future__ import annotations

from bench.dyrygent import create_app
from orchestrator.settings import Settings

app = create_app(Settings())
