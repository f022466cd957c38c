"""Workflow endpoints: the catalog, and one workflow's definition and graph."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from orchestrator.api.auth import read_workflows
from orchestrator.api.deps import ApiContext, context
from orchestrator.api.failures import error_responses
from orchestrator.api.models import API_PREFIX, WorkflowDetail, WorkflowList, WorkflowSummary
from orchestrator.core.models import WORKFLOW_NAME
from orchestrator.core.render import mermaid
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
