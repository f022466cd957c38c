"""``python -m workers.flower [FLOWER OPTIONS]``: Flower for the workers' app, with its
``/metrics`` behind the same login as every other page.

Credentials come from the environment, never the command line (where any user of the
host sees them in the process list): ``FLOWER_BASIC_AUTH=user:password`` (Flower reads
every ``FLOWER_*`` variable as its option), or ``FLOWER_BASIC_AUTH_FILE=/path`` naming a
file that holds ``user:password`` (a container secret).  ``/healthcheck`` stays open: it
says only ``OK``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tornado import web

AUTH_ENV = "FLOWER_BASIC_AUTH"
AUTH_FILE_ENV = "FLOWER_BASIC_AUTH_FILE"


def protect_metrics() -> None:
    """Make Flower's ``/metrics`` handler require the login (Flower leaves it open)."""
    from flower.views import monitor

    get = monitor.Metrics.get
    if not getattr(get, "__wrapped__", None):
        monitor.Metrics.get = web.authenticated(get)


def main(argv: list[str] | None = None) -> None:
    """Run Flower (``celery -A workers.main flower`` plus ``argv``), /metrics protected."""
    args = sys.argv[1:] if argv is None else argv
    if any(a.startswith("--basic-auth") or a.startswith("--basic_auth") for a in args):
        sys.exit(f"error: pass Flower's credentials in {AUTH_ENV} or {AUTH_FILE_ENV}, "
                 "not on the command line (the process list shows it to every user)")
    path = os.environ.pop(AUTH_FILE_ENV, "")
    if path:
        os.environ[AUTH_ENV] = Path(path).read_text(encoding="utf-8").strip()
    protect_metrics()
    from celery.bin.celery import main as celery_main

    sys.argv = ["celery", "-A", "workers.main", "flower", *args]
    celery_main()


if __name__ == "__main__":
    main()
