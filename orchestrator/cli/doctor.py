"""``orchestrator doctor``: check the deployment (see :mod:`orchestrator.runtime.doctor`)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--api-url", default=None, help="Also check this API answers (GET /readyz), "
              "e.g. http://127.0.0.1:8000.")
@click.option("--flower-url", default=None, help="Also check Flower answers (GET "
              "/healthcheck), e.g. http://127.0.0.1:5555.")
@click.option("--timeout", "timeout_s", type=float, default=1.0, show_default=True,
              help="Seconds to wait for the workers' replies.")
@click.pass_obj
def doctor(c: Any, as_json: bool, api_url: str | None, flower_url: str | None,
           timeout_s: float) -> None:
    """Check Redis (persistence, eviction), timeouts and leases against every workflow,
    live workers for every step and their clocks; exit 1 if anything needs fixing."""
    from orchestrator.runtime.coordinator import Coordinator
    from orchestrator.runtime.doctor import diagnose

    urls = []
    if api_url:
        urls.append(("API", api_url.rstrip("/") + "/readyz"))
    if flower_url:
        urls.append(("Flower", flower_url.rstrip("/") + "/healthcheck"))
    findings = diagnose(Coordinator(c.settings, c.catalog), urls, timeout_s)
    problems = [f for f in findings if not f.ok]
    if as_json:
        click.echo(json.dumps({"ok": not problems,
                               "findings": [f.as_json() for f in findings]}, indent=2))
    else:
        for f in findings:
            mark = "ok " if f.ok else "BAD"
            click.echo(f"{mark} {f.check:<18} {f.message}")
            if not f.ok:
                click.echo(f"    fix: {f.fix}")
        click.echo(f"{len(problems)} problem(s)" if problems else "no problems")
    if problems:
        sys.exit(1)
