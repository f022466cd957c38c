"""``GET /v1/runs/{run_id}/steps/{step}/items``: the items of a map step, a page at a
time (the run's own view shows a map step's item counts, never its items)."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Path, Query
from pydantic import Field, JsonValue

from orchestrator.api import access
from orchestrator.api.auth import read_runs
from orchestrator.api.deps import ApiContext, context
from orchestrator.api.failures import error_responses
from orchestrator.api.models import API_PREFIX, StepError, StepRunOut, WireModel
from orchestrator.settings import ApiToken
from orchestrator.store import StepRun

router = APIRouter(prefix=API_PREFIX, tags=["runs"])

RunId = Annotated[str, Path(min_length=1, max_length=200, description="The run's id.")]
StepId = Annotated[str, Path(min_length=1, max_length=200, description="The map step's id.")]
MAX_LIMIT = 1000


class ItemPage(WireModel):
    """Items ``start`` to ``start + limit`` of a map step, in item order."""

    step_id: str
    count: int = Field(description="The map step's items in all (0 before it expanded).")
    start: int
    limit: int
    items: list[StepRunOut] = Field(description="Each item's step run, `<step>[<i>]` "
                                    "(pending: not begun).")
    outputs: dict[str, JsonValue] = Field(default_factory=dict,
                                          description="Outputs of the items that have one.")
    next_start: int | None = Field(None, description="Start of the next page; null on the "
                                   "last page.")


def _out(s: StepRun, detail: str) -> StepRunOut:
    error = StepError.model_validate(s.error) if s.error and detail != "status" else None
    if error is not None and detail != "debug":
        error = error.model_copy(update={"traceback": None})
    return StepRunOut(step_id=s.step_id, status=s.status, attempt=s.attempt or 0,
                      queued_at=s.queued_at, started_at=s.started_at, ended_at=s.ended_at,
                      duration_s=s.duration_s, retry_at=s.retry_at, error=error,
                      worker=s.worker if detail != "status" else None,
                      reason=s.reason if detail != "status" else None)


def _page(ctx: ApiContext, token: ApiToken, run_id: str, step_id: str, start: int,
          limit: int) -> ItemPage:
    access.check_run(ctx, access.viewer_tenant(token), run_id)
    coord = ctx.coordinator
    items, outputs = coord.items(run_id, step_id, start, start + limit)
    count, _ = coord.progress.maps.counts_only(run_id, step_id)
    detail = access.detail_of(token)
    return ItemPage(step_id=step_id, count=count, start=start, limit=limit,
                    items=[_out(s, detail) for s in items],
                    outputs=outputs if detail != "status" else {},
                    next_start=start + limit if start + limit < count else None)


@router.get("/runs/{run_id}/steps/{step}/items", response_model=ItemPage,
            summary="List a map step's items",
            responses=error_responses(401, 403, 404, 410, 422, 503))
async def list_items(run_id: RunId, step: StepId,
                     ctx: Annotated[ApiContext, Depends(context)],
                     token: Annotated[ApiToken, Depends(read_runs)],
                     start: Annotated[int, Query(ge=0, le=10_000_000,
                                                 description="The first item's index.")] = 0,
                     limit: Annotated[int, Query(ge=1, le=MAX_LIMIT,
                                                 description="How many items.")] = 100
                     ) -> ItemPage:
    """The items of map step ``step`` (its step runs ``<step>[<i>]``: status, attempts,
    times, error) and their outputs, a page at a time.  404 if the run has no such map
    step."""
    return await anyio.to_thread.run_sync(_page, ctx, token, run_id, step, start, limit)
