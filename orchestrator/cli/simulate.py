"""``orchestrator simulate``: the path a run would take, on a virtual clock, without
calling any step function (:mod:`orchestrator.core.simulate`)."""

from __future__ import annotations

import json
from typing import Any

import click

from orchestrator.cli.inputs import read_json
from orchestrator.core.simulate import Faults, SimulationError, simulate


def _outputs(words: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for word in words:
        step, eq, text = word.partition("=")
        if not eq or not step:
            raise click.BadParameter(f"{word!r}: write STEP=JSON (or STEP=@file.json)",
                                     param_hint="--output")
        out[step] = read_json(text, option="--output")
    return out


@click.command("simulate")
@click.argument("name_or_path")
@click.option("--input", "input_", help="Run input: JSON text, or @file.json.")
@click.option("--output", "outputs", multiple=True, metavar="STEP=JSON",
              help="What STEP returns (default null); repeat for each step.")
@click.option("--outputs", "outputs_file", default=None, metavar="JSON|@FILE",
              help="What steps return, as one JSON object by step id (--output wins).")
@click.option("--fail", "fail", multiple=True, metavar="STEP[:N]",
              help="STEP fails its first N attempts (default: every attempt).")
@click.option("--timeout", "timeout", multiple=True, metavar="STEP",
              help="STEP runs into its time limit (a wait step: its wait times out).")
@click.option("--slow", "slow", multiple=True, metavar="STEP=SECONDS",
              help="Each attempt of STEP takes SECONDS.")
@click.option("--json", "as_json", is_flag=True, help="Print the simulation as JSON.")
@click.pass_obj
def simulate_cmd(c: Any, name_or_path: str, input_: str | None, outputs: tuple[str, ...],
                 outputs_file: str | None, fail: tuple[str, ...], timeout: tuple[str, ...],
                 slow: tuple[str, ...], as_json: bool) -> None:
    """Simulate a run of a workflow (a cataloged name or a YAML path): conditions, trigger
    rules, retries with their backoff, failure handlers and compensation, on a virtual
    clock.  No step function is called and nothing is stored; prints the timeline, the
    path taken and how the run ends.  Branches run in parallel, as on unlimited workers.
    """
    wf = c.catalog.resolve(name_or_path)
    given = read_json(outputs_file, {}, option="--outputs")
    if not isinstance(given, dict):
        raise click.BadParameter("a JSON object of outputs by step id",
                                 param_hint="--outputs")
    try:
        sim = simulate(wf, read_json(input_, {}), {**given, **_outputs(outputs)},
                       Faults.parse(fail, timeout, slow))
    except SimulationError as exc:
        raise click.BadParameter(str(exc)) from None
    if as_json:
        click.echo(json.dumps({
            "workflow": sim.workflow, "version": sim.version, "status": sim.status.value,
            "path": sim.path(), "statuses": sim.statuses(),
            "steps": [_step(s) for s in sim.steps], "undo": [_step(s) for s in sim.undo]},
            indent=2))
        return
    for line in sim.lines():
        click.echo(line)


def _step(s: Any) -> dict[str, Any]:
    return {"step": s.step_id, "status": s.status.value, "attempts": s.attempts,
            "start_s": s.start_s, "end_s": s.end_s, "note": s.note, "decision": s.decision}
