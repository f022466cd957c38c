"""Answers to durable waits: events (``POST /v1/events/{key}``, scope ``events:write``)
and approval decisions (``POST /v1/runs/{id}/steps/{step}/approve|reject``, scope
``runs:write``).  Both are recorded with who sent them (the token's name)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Path, Request

from orchestrator.api import access
from orchestrator.api.auth import write_events, write_runs
from orchestrator.api.deps import ApiContext, context
from orchestrator.api.failures import error_responses
from orchestrator.api.models import API_PREFIX, DecisionIn, EventSent, RunOut
from orchestrator.core.waits import MAX_KEY_CHARS, StepNotWaiting, WaitError
from orchestrator.errors import ApiError
from orchestrator.settings import ApiToken

router = APIRouter(prefix=API_PREFIX, tags=["waits"])

EventKey = Annotated[str, Path(min_length=1, max_length=MAX_KEY_CHARS,
                               description="The event key a wait step waits for, e.g. "
                               "`payment:o-1`.")]
RunId = Annotated[str, Path(min_length=1, max_length=200, description="The run's id.")]
StepId = Annotated[str, Path(min_length=1, max_length=200, description="The step's id.")]


def _who(token: ApiToken) -> str:
    return f"api:{token.name or 'unnamed token'}"


@router.post("/events/{key}", response_model=EventSent, summary="Send an event",
             responses=error_responses(400, 401, 403, 413, 422, 503),
             openapi_extra={"requestBody": {
                 "required": False, "description": "The event's payload (any JSON value; "
                 "empty: null): the output of the steps that wait for it.",
                 "content": {"application/json": {"schema": {}}}}})
async def send_event(key: EventKey, request: Request,
                     ctx: Annotated[ApiContext, Depends(context)],
                     token: Annotated[ApiToken, Depends(write_events)],
                     event_id: str | None = None) -> EventSent:
    """Every step waiting for ``key`` resumes with the payload as its output; a step that
    starts waiting for it later (within ``ORCH_EVENT_RETENTION_S``) still gets it.
    ``?event_id=`` names the event: the same id twice in a row is one event.  Event keys
    are the token's tenant's: only steps of its runs get the event."""
    body = await request.body()
    try:
        data: Any = json.loads(body) if body.strip() else None
    except ValueError:
        raise ApiError(422, "body_invalid", "the body is not JSON",
                       "Send the event's payload as JSON (Content-Type: "
                       "application/json).") from None
    try:
        eid, new, resumed = await anyio.to_thread.run_sync(
            lambda: ctx.coordinator.send_event(key, data, event_id, _who(token),
                                               token.tenant))
    except WaitError as exc:
        raise ApiError(422, "event_key_invalid", str(exc),
                       "Use a key of printable characters without spaces.") from None
    return EventSent(key=key, event_id=eid, new=new, resumed=resumed)


def _decide(ctx: ApiContext, token: ApiToken, run_id: str, step: str, body: DecisionIn | None,
            approve: bool) -> RunOut:
    coord = ctx.coordinator
    access.check_run(ctx, access.viewer_tenant(token), run_id)
    try:
        coord.decide(run_id, step, approve, body.comment if body else "", _who(token))
    except StepNotWaiting as exc:
        raise ApiError(409, "step_not_waiting", str(exc),
                       "Decide while GET /v1/runs/{id} shows the step waiting for "
                       "approval.") from None
    return access.view(ctx, token, run_id)


@router.post("/runs/{run_id}/steps/{step}/approve", response_model=RunOut,
             summary="Approve a waiting approval step",
             responses=error_responses(400, 401, 403, 404, 409, 410, 413, 422, 503))
def approve_step(run_id: RunId, step: StepId, ctx: Annotated[ApiContext, Depends(context)],
                 token: Annotated[ApiToken, Depends(write_runs)],
                 body: DecisionIn | None = None) -> RunOut:
    """Approve the step (recorded with the comment and the token's name); the run goes
    on.  409 ``step_not_waiting`` if it does not wait for a decision now."""
    return _decide(ctx, token, run_id, step, body, True)


@router.post("/runs/{run_id}/steps/{step}/reject", response_model=RunOut,
             summary="Reject a waiting approval step",
             responses=error_responses(400, 401, 403, 404, 409, 410, 413, 422, 503))
def reject_step(run_id: RunId, step: StepId, ctx: Annotated[ApiContext, Depends(context)],
                token: Annotated[ApiToken, Depends(write_runs)],
                body: DecisionIn | None = None) -> RunOut:
    """Reject the step (recorded with the comment and the token's name): it fails, and
    its failure path runs.  409 ``step_not_waiting`` if it does not wait now."""
    return _decide(ctx, token, run_id, step, body, False)
