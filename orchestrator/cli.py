"""The ``orchestrator`` command line."""

from __future__ import annotations

import sys
from typing import Any

import click

from orchestrator.catalog import Catalog, discover
from orchestrator.compiler import compile_workflow
from orchestrator.errors import OrchestratorError, WorkflowInvalid
from orchestrator.render import dot, mermaid, plan_tree
from orchestrator.settings import Settings


class _Ctx:
    """Settings built once per invocation, and the catalog loaded on first use."""

    def __init__(self) -> None:
        self.settings = Settings()
        self._catalog: Catalog | None = None

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = discover(self.settings.workflow_packages)
        return self._catalog


pass_ctx = click.make_pass_decorator(_Ctx, ensure=True)


@click.group()
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Run and inspect workflows on Celery and Redis."""
    ctx.obj = _Ctx()


@cli.command()
@click.argument("name_or_path")
@pass_ctx
def validate(c: _Ctx, name_or_path: str) -> None:
    """Validate a workflow (a YAML path or a cataloged name); list every problem."""
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


def main(argv: list[str] | None = None) -> Any:
    """Entry point: errors of ours print as one clear message and exit 2 (1 if invalid)."""
    try:
        return cli.main(args=argv, prog_name="orchestrator", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except WorkflowInvalid as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except OrchestratorError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
