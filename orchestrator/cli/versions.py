"""``orchestrator versions NAME`` and ``orchestrator diff A B``: the stored versions of a
workflow, and what changed between two of them.

A version is named by its content hash (or a prefix of at least 6 characters, as
``NAME@PREFIX``), or by a cataloged workflow's name, meaning its current version.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click

from orchestrator.core.models import WorkflowDef
from orchestrator.core.versions import diff as version_diff


def _coordinator(c: Any) -> Any:
    from orchestrator.cli.main import _coordinator as make

    return make(c)


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@click.command("versions")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the versions as JSON.")
@click.pass_obj
def versions(c: Any, name: str, as_json: bool) -> None:
    """List every stored version of workflow NAME, oldest first (* = the catalog's)."""
    infos = _coordinator(c).versions(name)
    if as_json:
        click.echo(json.dumps([{"version": i.version, "first_stored": i.first_stored,
                                "current": i.current} for i in infos], indent=2))
        return
    for i in infos:
        click.echo(f"{'*' if i.current else ' '} {i.version}  {_when(i.first_stored)}")


def resolve(coord: Any, token: str) -> WorkflowDef:
    """The definition ``token`` names: ``NAME@VERSION``, a cataloged ``NAME`` (its
    current version) or a full stored version hash.

    Raises:
        WorkflowNotFound, VersionNotFound: nothing stored or cataloged by that name.
    """
    if "@" in token:
        name, _, version = token.partition("@")
        wf: WorkflowDef = coord.stored(name, version).wf
        return wf
    if token in coord.catalog.workflows:
        wf = coord.compile(token).wf
        return wf
    wf = coord.definitions.load(token).wf
    return wf


@click.command("diff")
@click.argument("old")
@click.argument("new")
@click.pass_obj
def diff(c: Any, old: str, new: str) -> None:
    """Show what changed from version OLD to NEW of a workflow.

    Each is NAME@VERSION (a prefix of 6+ characters will do), a cataloged NAME (its
    current version) or a full version hash.  Lines: `+ step` added, `- step` removed,
    `~ step.field: old -> new` changed.
    """
    coord = _coordinator(c)
    for line in version_diff(resolve(coord, old), resolve(coord, new)).lines():
        click.echo(line)
