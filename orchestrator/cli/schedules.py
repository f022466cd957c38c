"""``orchestrator schedule …`` (add, list, show, pause, resume, delete, next) and
``orchestrator scheduler`` (the long-running service that fires them)."""

from __future__ import annotations

import json
import logging
import signal
import threading
from typing import Any

import click

from orchestrator.cli.inputs import read_json
from orchestrator.core import fires
from orchestrator.core.fires import display as when
from orchestrator.core.schedules import CatchUpPolicy, Overlap
from orchestrator.core.schedules import from_data as schedule_from_data
from orchestrator.store.schedules import ScheduleState, ScheduleStore


def _sched() -> Any:
    """The scheduler's module, imported when a command needs it (it brings Celery: the
    CLI's other commands start faster without it)."""
    from orchestrator.runtime import scheduler

    return scheduler


def _store(c: Any) -> ScheduleStore:
    """The schedule store, failing fast (a person waits on every call)."""
    from orchestrator.store import RunStore

    s = c.settings
    rs = RunStore.from_url(s.redis_target, s.key_prefix, s.run_retention_s,
                           timeout_s=s.redis_timeout_s)
    return ScheduleStore(rs.client, rs.keys)


@click.group("schedule")
def schedule() -> None:
    """Add, inspect, pause and delete schedules (fired by `orchestrator scheduler`)."""


@schedule.command("add")
@click.argument("schedule_id")
@click.option("--workflow", "-w", required=True, help="The workflow to run.")
@click.option("--cron", default=None, help="Cron expression, e.g. '0 3 * * *'.")
@click.option("--timezone", "--tz", "tz", default="UTC", show_default=True,
              help="IANA zone of --cron, e.g. Europe/Paris.")
@click.option("--every", "every_s", type=int, default=None, help="Interval in seconds "
              "(instead of --cron).")
@click.option("--anchor", type=int, default=0, show_default=True,
              help="With --every: fire at anchor + k * every (Unix s).")
@click.option("--input", "input_", default=None, help="Run input: JSON text or @file.json.")
@click.option("--input-expr", default=None, help="CEL over fire and schedule giving the "
              "run input, e.g. '{\"day\": fire.date}'.")
@click.option("--overlap", type=click.Choice([o.value for o in Overlap]),
              default=Overlap.SKIP.value, show_default=True,
              help="While the previous run of this schedule runs.")
@click.option("--catch-up", "catch_up", type=click.Choice([p.value for p in CatchUpPolicy]),
              default=CatchUpPolicy.LATEST.value, show_default=True,
              help="Fires missed while no scheduler ran.")
@click.option("--catch-up-max", type=int, default=10, show_default=True,
              help="With --catch-up all: most missed fires run.")
@click.option("--description", default="")
@click.option("--replace", is_flag=True, help="Replace the schedule of this id (its next "
              "fire is kept unless the timing changes).")
@click.pass_obj
def add(c: Any, schedule_id: str, workflow: str, cron: str | None, tz: str,
        every_s: int | None, anchor: int, input_: str | None, input_expr: str | None,
        overlap: str, catch_up: str, catch_up_max: int, description: str,
        replace: bool) -> None:
    """Add schedule SCHEDULE_ID (taken into account by running schedulers within a second)."""
    spec = schedule_from_data({
        "id": schedule_id, "workflow": workflow, "cron": cron, "timezone": tz,
        "every_s": every_s, "anchor": anchor, "input": read_json(input_),
        "input_expr": input_expr, "overlap": overlap, "description": description,
        "catch_up": {"policy": catch_up, "max": catch_up_max}}, source="schedule")
    store = _store(c)
    now = store.now()
    _sched().check_runnable(c.catalog, spec, now)
    nxt = store.put(spec, "api", fires.next_fire(spec, now), replace=replace)
    click.echo(f"schedule {spec.id} {'saved' if replace else 'added'}: {spec.describe()}, "
               f"next fire {when(nxt, spec.timezone)}")


def _line(st: ScheduleState) -> str:
    s = st.spec
    state = "paused" if st.paused else "active"
    return (f"{s.id:<24} {s.workflow:<20} {s.describe():<34} {s.overlap.value:<15} "
            f"{state:<7} {st.source:<9} next {when(None if st.paused else st.next)}")


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_schedules(c: Any, as_json: bool) -> None:
    """List every schedule, with its next fire and the schedulers running."""
    store = _store(c)
    states = store.all()
    alive = store.alive(_sched().ALIVE_WITHIN_S)
    if as_json:
        click.echo(json.dumps({"schedules": [s.as_json() for s in states],
                               "schedulers": alive}, indent=2))
        return
    for st in states:
        click.echo(_line(st))
    if not states:
        click.echo("no schedules")
    click.echo(f"schedulers running: {len(alive)}"
               + ("" if alive else " (start one: orchestrator scheduler)"))


@schedule.command("show")
@click.argument("schedule_id")
@click.option("--count", default=5, show_default=True, help="Upcoming fires shown.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def show(c: Any, schedule_id: str, count: int, as_json: bool) -> None:
    """Show a schedule: its definition, state and next fires."""
    store = _store(c)
    st = store.get(schedule_id)
    start = st.next - 1 if st.next is not None and not st.paused else store.now()
    upcoming = fires.upcoming(st.spec, start, count)
    data = st.as_json() | {"upcoming": upcoming}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(_line(st))
    spec = st.spec.model_dump(mode="json", exclude_defaults=True)
    click.echo(f"  definition: {json.dumps(spec)}")
    click.echo(f"  started {st.started}, skipped {st.skipped} (overlap), missed "
               f"{st.missed} (catch-up), failed {st.failed}")
    if st.last_run:
        click.echo(f"  last run: {st.last_run} (fire {when(st.last_fire, st.spec.timezone)})")
    if st.queued:
        click.echo(f"  queued fires: {', '.join(when(t) for t in st.queued)}")
    if st.last_error:
        click.echo(f"  last error: {st.last_error}")
    click.echo("  next fires:" + ("" if upcoming else " none"))
    for t in upcoming:
        click.echo(f"    {when(t, st.spec.timezone)}")


@schedule.command("pause")
@click.argument("schedule_id")
@click.pass_obj
def pause(c: Any, schedule_id: str) -> None:
    """Pause a schedule: it fires nothing until resumed."""
    changed = _store(c).set_paused(schedule_id, True, None)
    click.echo(f"schedule {schedule_id} {'paused' if changed else 'was already paused'}")


@schedule.command("resume")
@click.argument("schedule_id")
@click.pass_obj
def resume(c: Any, schedule_id: str) -> None:
    """Resume a paused schedule from its next fire after now (paused fires do not run)."""
    store = _store(c)
    st = store.get(schedule_id)
    nxt = fires.next_fire(st.spec, store.now())
    changed = store.set_paused(schedule_id, False, nxt)
    click.echo(f"schedule {schedule_id} "
               + (f"resumed, next fire {when(nxt, st.spec.timezone)}" if changed
                  else "was not paused"))


@schedule.command("delete")
@click.argument("schedule_id")
@click.pass_obj
def delete(c: Any, schedule_id: str) -> None:
    """Delete a schedule added with `schedule add` (its runs stay)."""
    _store(c).delete(schedule_id)
    click.echo(f"schedule {schedule_id} deleted")


@schedule.command("next")
@click.argument("schedule_id", required=False)
@click.option("--count", default=10, show_default=True, help="How many fires.")
@click.pass_obj
def next_fires(c: Any, schedule_id: str | None, count: int) -> None:
    """The next fires of one schedule, or of every active schedule, in time order."""
    store = _store(c)
    for t, sid, spec in _sched().upcoming_fires(store, count, schedule_id):
        click.echo(f"{when(t, spec.timezone)}  {sid}  -> {spec.workflow}")


@click.command("scheduler")
@click.option("--name", default=None, help="This scheduler's name (default host:pid).")
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--heartbeat-file", type=click.Path(dir_okay=False), default=None,
              help="Touch this file after every look at the due schedules while Redis "
              "answers (for a container's health check).")
@click.pass_obj
def scheduler(c: Any, name: str | None, log_level: str, heartbeat_file: str | None) -> None:
    """Fire due schedules until SIGTERM or Ctrl-C (run as many as you like: they share the
    work and never start a fire twice)."""
    from orchestrator.runtime.scheduler import serve

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        logging.getLogger(__name__).info("scheduler: signal %d, stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    serve(c.settings, c.catalog, stop, name=name, heartbeat_file=heartbeat_file)
