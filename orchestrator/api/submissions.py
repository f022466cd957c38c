"""``GET /v1/submissions/rejected``: broker submissions that started no run, and why
(scope ``runs:read``)."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Query

from orchestrator.api import access
from orchestrator.api.auth import read_runs
from orchestrator.api.deps import ApiContext, context
from orchestrator.api.failures import error_responses
from orchestrator.api.models import API_PREFIX
from orchestrator.core.tenants import DEFAULT_TENANT
from orchestrator.settings import ApiToken
from orchestrator.store.submissions import RejectedSubmission, Submissions

router = APIRouter(prefix=API_PREFIX, tags=["submissions"])


@router.get("/submissions/rejected", summary="Rejected broker submissions",
            response_model=list[RejectedSubmission], responses=error_responses(401, 403, 503))
async def rejected(ctx: Annotated[ApiContext, Depends(context)],
                   _token: Annotated[ApiToken, Depends(read_runs)],
                   limit: Annotated[int, Query(ge=1, le=1000)] = 50
                   ) -> list[RejectedSubmission]:
    """The newest ``orchestrator.submit`` messages that started no run (an unknown
    workflow, invalid input, a malformed run id), newest first.  Broker submissions
    belong to the default tenant: another tenant's token sees none (``admin``: all)."""
    if access.viewer_tenant(_token) not in (None, DEFAULT_TENANT):
        return []
    store = ctx.coordinator.store
    return await anyio.to_thread.run_sync(Submissions(store.client, store.keys).rejected,
                                          limit)
