"""Workflow endpoints: the catalog, and one workflow's definition and graph."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Path, Query

from orchestrator.api.auth import read_workflows
from orchestrator.api.deps import ApiContext, context
from orchestrator.api.failures import error_responses
from orchestrator.api.models import (
    API_PREFIX,
    FieldChangeOut,
    VersionDiffOut,
    VersionList,
    VersionOut,
    WorkflowDetail,
    WorkflowList,
    WorkflowSummary,
)
from orchestrator.core.models import WORKFLOW_NAME
from orchestrator.core.render import mermaid
from orchestrator.core.versions import FieldChange
from orchestrator.settings import ApiToken

router = APIRouter(prefix=API_PREFIX, tags=["workflows"])


@router.get("/workflows", response_model=WorkflowList, summary="List workflows",
            responses=error_responses(401, 403))
def list_workflows(ctx: Annotated[ApiContext, Depends(context)],
                   _token: Annotated[ApiToken, Depends(read_workflows)]) -> WorkflowList:
    """Every workflow this server can run, by name."""
    return WorkflowList(workflows=[
        WorkflowSummary(name=wf.name, version=wf.version, description=wf.description,
                        label=wf.label, step_count=len(wf.steps))
        for _, wf in sorted(ctx.catalog.workflows.items())])


@router.get("/workflows/{name}", response_model=WorkflowDetail, summary="Read a workflow",
            responses=error_responses(401, 403, 404, 422))
def get_workflow(
    name: Annotated[str, Path(pattern=WORKFLOW_NAME, max_length=200)],
    ctx: Annotated[ApiContext, Depends(context)],
    _token: Annotated[ApiToken, Depends(read_workflows)],
) -> WorkflowDetail:
    """The workflow's version, input JSON schema, steps and graph (Mermaid)."""
    wf = ctx.catalog.get(name)
    return WorkflowDetail.from_workflow(wf, mermaid(wf))


VersionId = Annotated[str, Path(pattern="^[0-9a-f]{6,16}$",
                                description="A version (content hash), or a prefix of at "
                                "least 6 of its hex digits.")]


@router.get("/workflows/{name}/versions", response_model=VersionList,
            summary="List a workflow's versions", responses=error_responses(401, 403, 404, 422))
def list_versions(
    name: Annotated[str, Path(pattern=WORKFLOW_NAME, max_length=200)],
    ctx: Annotated[ApiContext, Depends(context)],
    _token: Annotated[ApiToken, Depends(read_workflows)],
) -> VersionList:
    """Every stored version of the workflow, oldest first; ``current`` marks the one a
    submit runs unless it names another (``?version=``)."""
    return VersionList(name=name, versions=[
        VersionOut(version=i.version, first_stored=i.first_stored, current=i.current)
        for i in ctx.coordinator.versions(name)])


@router.get("/workflows/{name}/versions/{version}", response_model=WorkflowDetail,
            summary="Read one version of a workflow",
            responses=error_responses(401, 403, 404, 422))
def get_version(
    name: Annotated[str, Path(pattern=WORKFLOW_NAME, max_length=200)],
    version: VersionId,
    ctx: Annotated[ApiContext, Depends(context)],
    _token: Annotated[ApiToken, Depends(read_workflows)],
) -> WorkflowDetail:
    """That stored version's definition and graph."""
    wf = ctx.coordinator.stored(name, version).wf
    return WorkflowDetail.from_workflow(wf, mermaid(wf))


@router.get("/workflows/{name}/diff", response_model=VersionDiffOut,
            summary="Compare two versions of a workflow",
            responses=error_responses(401, 403, 404, 422))
async def diff_versions(
    name: Annotated[str, Path(pattern=WORKFLOW_NAME, max_length=200)],
    ctx: Annotated[ApiContext, Depends(context)],
    _token: Annotated[ApiToken, Depends(read_workflows)],
    old: Annotated[str, Query(alias="from", pattern="^[0-9a-f]{6,16}$",
                              description="The earlier version.")],
    new: Annotated[str | None, Query(alias="to", pattern="^[0-9a-f]{6,16}$",
                                     description="The later version (default: the "
                                     "current one).")] = None,
) -> VersionDiffOut:
    """Steps added, removed and changed (with each changed field) from ``from`` to ``to``."""
    d = await anyio.to_thread.run_sync(ctx.coordinator.diff, name, old, new)

    def changes(cs: tuple[FieldChange, ...]) -> list[FieldChangeOut]:
        return [FieldChangeOut(field=c.field, old=c.old, new=c.new) for c in cs]

    return VersionDiffOut(old=d.old, new=d.new, added=list(d.added), removed=list(d.removed),
                          changed={k: changes(v) for k, v in d.changed.items()},
                          workflow=changes(d.workflow))
