"""``GET /metrics``: Prometheus metrics of runs, steps and queues (scope ``metrics:read``)."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends
from fastapi.responses import Response

from orchestrator.api import prometheus as metrics
from orchestrator.api.auth import read_metrics
from orchestrator.api.deps import ApiContext, context
from orchestrator.api.failures import error_responses
from orchestrator.core.priorities import band_queues
from orchestrator.settings import ApiToken

router = APIRouter(tags=["metrics"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
                       **error_responses(401, 403)})
async def get_metrics(ctx: Annotated[ApiContext, Depends(context)],
                      _token: Annotated[ApiToken, Depends(read_metrics)]) -> Response:
    """Run and step counters by workflow, step-duration histograms and queue depths,
    read from Redis at scrape time (every worker process feeds the same numbers)."""
    coord = ctx.coordinator
    queues = {ctx.settings.default_queue}
    for wf in ctx.catalog.workflows.values():
        queues |= {s.queue or wf.default_queue or ctx.settings.default_queue
                   for s in wf.steps}
    bands = {band for q in queues for band in band_queues(q)}  # default.high, default.low
    body = await anyio.to_thread.run_sync(metrics.render, coord.store, sorted(bands))
    return Response(body, media_type=metrics.CONTENT_TYPE)
