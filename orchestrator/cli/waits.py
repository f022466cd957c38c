"""``orchestrator event send`` and ``orchestrator approve|reject``: the answers that
durable waits wait for (docs/triggers.md, "Durable waits")."""

from __future__ import annotations

import getpass
from typing import Any

import click


def _who() -> str:
    """Who runs this command (recorded with the event or the decision)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _coordinator(c: Any) -> Any:
    from orchestrator.cli.main import _coordinator as make  # the CLI's fail-fast one

    return make(c)


@click.group("event")
def event() -> None:
    """Send events to the steps that wait for them."""


@event.command("send")
@click.argument("key")
@click.option("--data", default="null", show_default=True,
              help="The event's payload (JSON text, or @file.json): the waiting step's "
              "output.")
@click.option("--id", "event_id", default=None,
              help="The event's id (default a new one); the same id twice is one event.")
@click.pass_obj
def send(c: Any, key: str, data: str, event_id: str | None) -> None:
    """Send an event for KEY: every step waiting for it resumes; a step that starts
    waiting for it later (within ORCH_EVENT_RETENTION_S) still gets it."""
    from orchestrator.cli.inputs import read_json

    payload = read_json(data, {}, option="--data")
    eid, new, resumed = _coordinator(c).send_event(key, payload, event_id, by=_who())
    if not new:
        click.echo(f"event {eid} for {key!r} was sent already; nothing changed")
    else:
        click.echo(f"event {eid} for {key!r} sent; {resumed} waiting step(s) resume")


def _decide(c: Any, run_id: str, step: str, comment: str, approve: bool) -> None:
    _coordinator(c).decide(run_id, step, approve, comment, by=_who())
    word = "approved" if approve else "rejected"
    click.echo(f"step {step} of run {run_id} {word}" + (f": {comment}" if comment else ""))


@click.command("approve")
@click.argument("run_id")
@click.argument("step")
@click.option("--comment", default="", help="Why (recorded with the decision).")
@click.pass_obj
def approve(c: Any, run_id: str, step: str, comment: str) -> None:
    """Approve STEP of RUN_ID (an approval step that waits): the run goes on."""
    _decide(c, run_id, step, comment, True)


@click.command("reject")
@click.argument("run_id")
@click.argument("step")
@click.option("--comment", default="", help="Why (recorded with the decision).")
@click.pass_obj
def reject(c: Any, run_id: str, step: str, comment: str) -> None:
    """Reject STEP of RUN_ID (an approval step that waits): the step fails, and its
    failure path runs (on_failure handlers, trigger rules)."""
    _decide(c, run_id, step, comment, False)

