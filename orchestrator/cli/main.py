"""The ``orchestrator`` command line.

Exit codes: 0 success; 1 an invalid workflow (or a followed run that failed); 2 any other
error of ours (a bad setting, an unknown workflow or run, a usage error); 3 Redis is
unreachable; 4 Redis refused the password; 5 Redis did not answer in time
(``ORCH_REDIS_TIMEOUT_S``); 6 the run store has a schema version this release does not use
(see docs/operations.md, Upgrades), or is a Redis Cluster; 130 interrupted.  Errors are
one line on stderr, with the fix.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from orchestrator import release
from orchestrator import settings as settings_mod
from orchestrator.cli.doctor import doctor
from orchestrator.cli.follow import follow, items_table, step_table
from orchestrator.cli.inputs import read_json
from orchestrator.cli.schedules import schedule, scheduler
from orchestrator.cli.simulate import simulate_cmd
from orchestrator.cli.triggers import trigger, triggers_service
from orchestrator.cli.versions import diff, versions
from orchestrator.cli.waits import approve, event, reject
from orchestrator.core.compiler import compile_workflow
from orchestrator.core.origin import Origin, OriginKind
from orchestrator.core.priorities import Priority
from orchestrator.core.render import dot, mermaid, plan_tree
from orchestrator.core.states import RunStatus
from orchestrator.core.yamlio import parse_yaml, read_text
from orchestrator.errors import (
    OrchestratorError,
    RedisAuthFailed,
    RedisTimedOut,
    RedisUnreachable,
    RunDamaged,
    RunNotFound,
    StoreIncompatible,
    StoreUnavailable,
    WorkflowInvalid,
)
from orchestrator.outages import explain_either
from orchestrator.runtime.catalog import Catalog, discover, limits_of

if TYPE_CHECKING:
    from orchestrator.runtime.coordinator import Coordinator

EXIT_INVALID_WORKFLOW = 1
FAILED_ENDS = frozenset({RunStatus.FAILED, RunStatus.COMPENSATED,
                         RunStatus.COMPENSATION_FAILED})
"""How a followed run ends when ``run`` and ``resume`` exit 1."""
EXIT_ERROR = 2
EXIT_SCHEMA = 6
"""The run store has a schema version this release does not use."""
EXIT_CODES: dict[type[StoreUnavailable], int] = {
    RedisUnreachable: 3,
    RedisAuthFailed: 4,
    RedisTimedOut: 5,
}
"""Exit code of each kind of Redis failure (any other one exits 2)."""


def _user() -> str | None:
    """Who runs this command (recorded in the runs it starts), if the OS says."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


class _Ctx:
    """Settings built once per invocation, and the catalog loaded on first use."""

    def __init__(self) -> None:
        self.settings = settings_mod.load()
        self._catalog: Catalog | None = None

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = discover(self.settings.workflow_packages,
                                     limits=limits_of(self.settings))
        return self._catalog


pass_ctx = click.make_pass_decorator(_Ctx, ensure=True)


class _Commands(click.Group):
    """The command group: a Redis failure in any command becomes one explained error."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort,
                StoreUnavailable):
            raise
        except Exception as exc:
            c = ctx.obj
            if isinstance(c, _Ctx):
                err = explain_either(exc, c.settings.redis_url, c.settings.broker_url,
                                     c.settings.redis_timeout_s)
                if err is not None:
                    raise err from None
            raise


@click.group(cls=_Commands)
@click.version_option(release.current(), "--version", "-V", prog_name="orchestrator",
                      message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Run and inspect workflows on Celery and Redis.

    Exit codes: 1 invalid workflow, 2 other errors, 3 Redis unreachable, 4 Redis refused
    the password, 5 Redis did not answer in time, 6 the run store has a schema version
    this release does not use, or is a Redis Cluster.
    """
    ctx.obj = _Ctx()


@cli.command()
@click.argument("name_or_path")
@pass_ctx
def validate(c: _Ctx, name_or_path: str) -> None:
    """Validate a workflow (a YAML path or a cataloged name); list every problem."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        # the file's own limits first (size, encoding, aliases, steps): a broken file is
        # refused before the workflow packages are imported to check its functions
        limits = limits_of(c.settings)
        parse_yaml(read_text(path, limits), str(path), limits)
    wf = c.catalog.resolve(name_or_path)
    click.echo(f"ok: workflow {wf.name!r} version {wf.version}, {len(wf.steps)} step(s)")


@cli.command()
@click.argument("name_or_path")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@pass_ctx
def plan(c: _Ctx, name_or_path: str, as_json: bool) -> None:
    """Print the canvas tree and the edges handled by dependency counters."""
    wf = c.catalog.resolve(name_or_path)
    p = compile_workflow(wf, max_unit_tasks=c.settings.max_unit_tasks)
    click.echo(p.model_dump_json(indent=2) if as_json else plan_tree(p, wf))


@cli.command()
@click.argument("name_or_path")
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid",
              show_default=True)
@pass_ctx
def graph(c: _Ctx, name_or_path: str, fmt: str) -> None:
    """Print the workflow's DAG as Mermaid or Graphviz dot."""
    wf = c.catalog.resolve(name_or_path)
    click.echo(mermaid(wf) if fmt == "mermaid" else dot(wf))


@cli.command("list")
@pass_ctx
def list_workflows(c: _Ctx) -> None:
    """List the cataloged workflows."""
    for name, wf in sorted(c.catalog.workflows.items()):
        click.echo(f"{name}\t{wf.version}\t{len(wf.steps)} steps\t{wf.description}")


def _coordinator(c: _Ctx) -> Coordinator:
    """A coordinator that fails fast: a person waits on every Redis call of the CLI."""
    from orchestrator.runtime.celeryconf import client_app
    from orchestrator.runtime.coordinator import Coordinator
    from orchestrator.store import RunStore

    s = c.settings
    store = RunStore.from_url(s.redis_target, s.key_prefix, s.run_retention_s,
                              timeout_s=s.redis_timeout_s, broker=s.broker_target)
    store.check_schema()  # a store of another schema: stop before reading or writing it
    return Coordinator(s, c.catalog, app=client_app(s, timeout_s=s.redis_timeout_s),
                       store=store)


@cli.command()
@click.argument("name")
@click.option("--input", "input_", help="Run input: JSON text, or @file.json.")
@click.option("--follow/--no-follow", "follow_live", default=True, show_default=True,
              help="Show progress live, then the per-step table.")
@click.option("--timeout", "timeout_s", type=float, default=None,
              help="Stop following after this many seconds (the run goes on).")
@click.option("--preflight/--no-preflight", default=True, show_default=True,
              help="First check that live workers can run every step.")
@click.option("--version", "version", default=None,
              help="Run this stored version (`orchestrator versions NAME`; a prefix of "
              "6+ characters will do) instead of the cataloged one.")
@click.option("--priority", type=click.Choice([p.value for p in Priority]),
              default=Priority.NORMAL.value, show_default=True,
              help="The band of queues its steps go to: a high run's steps overtake "
              "queued normal and low ones.")
@pass_ctx
def run(c: _Ctx, name: str, input_: str | None, follow_live: bool,
        timeout_s: float | None, preflight: bool, version: str | None,
        priority: str) -> None:
    """Start a run of workflow NAME; with --follow, watch it to the end."""
    coord = _coordinator(c)
    run_id = coord.submit(name, read_json(input_, {}), preflight=preflight,
                          origin=Origin(kind=OriginKind.CLI, by=_user()), version=version,
                          priority=Priority(priority))
    click.echo(f"run {run_id} started ({name})")
    if follow_live:
        view = follow(coord, run_id, click.echo, timeout_s)
        click.echo(step_table(view))
        if view.run.status in FAILED_ENDS:
            sys.exit(1)


@cli.command()
@click.argument("run_id")
@click.option("--items", "items_of", default=None, metavar="STEP",
              help="List the items of map step STEP (a map step's row shows only its "
              "item counts by status).")
@click.option("--from", "start", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --items: the first item's index.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="With --items: how many items.")
@pass_ctx
def status(c: _Ctx, run_id: str, items_of: str | None, start: int, limit: int) -> None:
    """Print a run's status and its per-step table (or a map step's items)."""
    coord = _coordinator(c)
    if items_of is None:
        click.echo(step_table(coord.view(run_id)))
        return
    items, outputs = coord.items(run_id, items_of, start, start + limit)
    click.echo(items_table(items, outputs))


@cli.command()
@click.option("--workflow", default=None, help="Only runs of this workflow.")
@click.option("--status", "status_", type=click.Choice([s.value for s in RunStatus]),
              default=None, help="Only runs in this status.")
@click.option("--limit", default=20, show_default=True)
@pass_ctx
def runs(c: _Ctx, workflow: str | None, status_: str | None, limit: int) -> None:
    """List recent runs, newest first."""
    coord = _coordinator(c)
    ids = coord.store.list_runs(workflow, RunStatus(status_) if status_ else None, 0, limit)
    for rid in ids:
        try:
            r = coord.store.run(rid)
        except RunNotFound:
            continue  # expired between the listing and the read
        except RunDamaged as exc:
            click.echo(f"{rid}  (damaged record: {exc})")
            continue
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created_at))
        click.echo(f"{rid}  {r.workflow:<20} {r.status.value:<10} {created}")


@cli.command()
@click.option("--limit", type=int, default=20, show_default=True)
@pass_ctx
def rejected(c: _Ctx, limit: int) -> None:
    """List broker submissions that started no run, newest first, with the reason."""
    from orchestrator.store.submissions import Submissions

    store = _coordinator(c).store
    recs = Submissions(store.client, store.keys).rejected(limit)
    if not recs:
        click.echo("no rejected submissions")
    for rec in recs:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec.at))
        click.echo(f"{when}  {rec.workflow or '-':<20} {rec.run_id or '-':<24} {rec.code}: "
                   f"{rec.reason}")


@cli.command()
@click.argument("run_id")
@click.option("--compensate", is_flag=True, help="Unwind instead: running steps finish, "
              "then the compensations of every succeeded step run (undo run RUN_ID.undo).")
@pass_ctx
def cancel(c: _Ctx, run_id: str, compensate: bool) -> None:
    """Cancel a run: pending steps never start, running ones are revoked."""
    if _coordinator(c).cancel(run_id, compensate=compensate):
        click.echo(f"run {run_id} " + ("cancelled; its succeeded steps are being undone "
                                       f"(undo run {run_id}.undo)" if compensate
                                       else "cancelled"))
    else:
        click.echo(f"run {run_id} had already ended (or is being undone); nothing to cancel")


@cli.command()
@click.argument("run_id")
@click.option("--from", "from_step", default=None,
              help="Run this step, and everything downstream of it, again.")
@click.option("--input-patch", default=None, help="A JSON Merge Patch (RFC 7386) for the "
              "run's input: JSON text, or @file.json.")
@click.option("--version", "version", default=None,
              help="Resume on this newer stored version (refused if a reused step changed).")
@click.option("--follow/--no-follow", "follow_live", default=True, show_default=True,
              help="Show the new run's progress live, then its per-step table.")
@click.option("--timeout", "timeout_s", type=float, default=None,
              help="Stop following after this many seconds (the run goes on).")
@pass_ctx
def resume(c: _Ctx, run_id: str, from_step: str | None, input_patch: str | None,
           version: str | None, follow_live: bool, timeout_s: float | None) -> None:
    """Start a new run that resumes RUN_ID: succeeded steps keep their outputs (not
    downstream of --from or of a step that did not succeed); the rest run."""
    coord = _coordinator(c)
    patch = read_json(input_patch, None, option="--input-patch")
    new_id, plan = coord.resume(run_id, from_step, patch, version,
                                origin=Origin(kind=OriginKind.CLI, by=_user()))
    click.echo(f"run {new_id} started, resuming {run_id}: reuses "
               f"{', '.join(plan.reuse) or 'nothing'}; runs {', '.join(plan.rerun)}")
    if follow_live:
        view = follow(coord, new_id, click.echo, timeout_s)
        click.echo(step_table(view))
        if view.run.status in FAILED_ENDS:
            sys.exit(1)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("--queues", "-Q", default=None, help="Comma-separated queues to consume "
              "(default: the default queue), each with its priority bands (Q.high, Q.low; "
              "a band named alone is consumed alone).")
@click.option("--concurrency", "-c", type=int, default=None, help="Pool size.")
@click.option("--pool", "-P", type=click.Choice(["prefork", "threads", "solo"]),
              default="prefork", show_default=True)
@click.option("--autoscale", default=None, help="MAX,MIN pool processes (prefork only).")
@click.option("--name", "-n", default=None, help="Worker node name, e.g. w1@%h.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def worker(c: _Ctx, queues: str | None, concurrency: int | None, pool: str,
           autoscale: str | None, name: str | None, celery_args: tuple[str, ...]) -> None:
    """Start a Celery worker for the workflows' steps (events on, for Flower)."""
    args = [sys.executable, "-m", "celery", "-A", "workers.main", "worker", "-E",
            "-Q", queues or c.settings.default_queue, "-P", pool]
    conc = concurrency or c.settings.worker_concurrency
    if conc:
        args += ["-c", str(conc)]
    if autoscale:
        args += ["--autoscale", autoscale]
    if name:
        args += ["-n", name]
    args += list(celery_args)
    os.execv(sys.executable, args)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("--host", default=None, help="Bind address (default ORCH_API_HOST).")
@click.option("--port", type=int, default=None, help="Port (default ORCH_API_PORT).")
@click.option("--log-level", default="info", show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Serving processes: more serve more submits per second where cores "
              "are free.")
def api(host: str | None, port: int | None, log_level: str, workers: int) -> None:
    """Serve the HTTP API (bearer tokens from ORCH_API_TOKENS)."""
    from orchestrator.api.server import main as serve

    args = ["--log-level", log_level, "--workers", str(workers)]
    if host:
        args += ["--host", host]
    if port:
        args += ["--port", str(port)]
    serve(args)


@cli.command()
@click.option("--queue", "-q", "names", multiple=True,
              help="A queue to report; repeat for more. Default: the default queue, then "
              "every queue some worker consumes.")
@click.option("--timeout", "timeout_s", type=float, default=1.0, show_default=True,
              help="Seconds to wait for the workers' replies.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_ctx
def queues(c: _Ctx, names: tuple[str, ...], timeout_s: float, as_json: bool) -> None:
    """Show each queue's waiting tasks and the workers consuming it."""
    from dataclasses import asdict

    from orchestrator.runtime.celeryconf import client_app
    from orchestrator.runtime.queues import format_queues, queue_depths

    app = client_app(c.settings, timeout_s=c.settings.redis_timeout_s)
    depths = queue_depths(app, names or None, timeout_s=timeout_s)
    if as_json:
        click.echo(json.dumps([asdict(d) for d in depths], indent=2))
    else:
        click.echo(format_queues(depths))


def _interrupt(signum: int, _frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the stop short
    raise KeyboardInterrupt(f"signal {signum}")


def _stop_on_sigterm() -> None:
    """Treat SIGTERM (what a process manager or ``docker stop`` sends) as Ctrl-C, so the
    stack this command started is stopped the same way (warm shutdown), not leaked."""
    signal.signal(signal.SIGTERM, _interrupt)


def _wait_for_interrupt(stack: Any) -> None:
    click.echo("stack is up; press Ctrl-C to stop it")
    try:
        signal.pause()
    except KeyboardInterrupt:
        click.echo("")


@cli.command()
@click.option("--concurrency", "-c", type=int, default=2, show_default=True)
@click.option("--flower-port", type=int, default=5555, show_default=True)
@click.option("--api-port", type=int, default=8000, show_default=True)
@pass_ctx
def up(c: _Ctx, concurrency: int, flower_port: int, api_port: int) -> None:
    """Start the local stack (Redis, a worker, Flower, the API) until Ctrl-C."""
    from orchestrator.dev.localstack import LocalStack

    _stop_on_sigterm()
    stack = LocalStack(c.settings, concurrency=concurrency, flower_port=flower_port,
                       api_port=api_port, emit=click.echo)
    try:
        stack.start()
        _wait_for_interrupt(stack)
    finally:
        stack.stop()


@cli.command()
@click.option("--once", is_flag=True, help="Stop the stack when the demo run ends.")
@click.option("--concurrency", "-c", type=int, default=2, show_default=True)
@click.option("--flower-port", type=int, default=5555, show_default=True)
@click.option("--api-port", type=int, default=8000, show_default=True)
@click.option("--workflow", default="customer_order", show_default=True,
              help="The workflow whose demo to run (a package declares it as a Demo).")
@pass_ctx
def demo(c: _Ctx, once: bool, concurrency: int, flower_port: int, api_port: int,
         workflow: str) -> None:
    """Start the local stack and run a workflow's demo (the customer order), live."""
    from orchestrator.dev.localstack import LocalStack
    from orchestrator.runtime.catalog import discover
    from orchestrator.runtime.coordinator import Coordinator

    spec = c.catalog.demos.get(workflow)
    if spec is None:
        raise click.BadParameter(f"no demo for workflow {workflow!r}; demos: "
                                 f"{', '.join(sorted(c.catalog.demos)) or '(none)'}",
                                 param_hint="--workflow")
    _stop_on_sigterm()
    run_id = uuid.uuid4().hex  # known first, so the run view's address is the first line
    click.echo(f"run view   http://127.0.0.1:{api_port}/ui/runs/{run_id}  (sign in with "
               "the API token printed below)")
    stack = LocalStack(c.settings, concurrency=concurrency, flower_port=flower_port,
                       api_port=api_port, emit=click.echo)
    try:
        stack.start()
        settings = c.settings.model_copy(update={"redis_url": stack.redis_url})
        coord = Coordinator(settings, discover(settings.workflow_packages))
        if spec.prepare is not None:
            spec.prepare(coord.store.client)
        coord.submit(spec.workflow, spec.input, run_id,
                     origin=Origin(kind=OriginKind.CLI, by=_user()))
        click.echo(f"\nrun {run_id} of {spec.workflow} started; following it:")
        view = follow(coord, run_id, click.echo, timeout_s=120)
        click.echo("")
        click.echo(step_table(view))
        click.echo(f"\nsee its tasks in Flower: http://127.0.0.1:{flower_port}/tasks "
                   f"(search {run_id})")
        if not once:
            _wait_for_interrupt(stack)
    finally:
        stack.stop()


cli.add_command(doctor)
cli.add_command(schedule)
cli.add_command(scheduler)
cli.add_command(triggers_service)
cli.add_command(trigger)
cli.add_command(event)
cli.add_command(approve)
cli.add_command(reject)
cli.add_command(versions)
cli.add_command(diff)
cli.add_command(simulate_cmd)


def main(argv: list[str] | None = None) -> Any:
    """Entry point: errors of ours print as one clear message, with the exit codes of the
    module docstring (1 invalid workflow, 2 other errors, 3-5 Redis failures)."""
    try:
        return cli.main(args=argv, prog_name="orchestrator", standalone_mode=False,
                        complete_var="_ORCHESTRATOR_COMPLETE")
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except WorkflowInvalid as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INVALID_WORKFLOW)
    except StoreUnavailable as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_CODES.get(type(exc), EXIT_ERROR))
    except StoreIncompatible as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_SCHEMA)
    except OrchestratorError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
