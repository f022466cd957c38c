"""Schedule endpoints: ``/v1/schedules`` (scopes ``schedules:read``, ``schedules:write``).

The same operations as ``orchestrator schedule …``: list, add (POST; PUT replaces), read
with the next fires, pause, resume, delete.  Schedules declared beside a workflow can be
read, paused and resumed here, not replaced or deleted (409: change the declaration).

Each tenant has its own schedule ids: a token of tenant ``acme`` that adds ``nightly``
stores ``t__acme__nightly`` (:func:`stored_id`) and sees ``nightly``; two tenants' equal
ids never meet, so a 409 never tells one tenant that another uses an id.  The default
tenant's ids are stored as given (the CLI's and the declared schedules are its), and may
not start with ``t__``; an ``admin`` token sees and addresses every tenant's by its stored
id.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field

from orchestrator.api import access
from orchestrator.api.auth import Credentials, authorize
from orchestrator.api.deps import ApiContext, context
from orchestrator.api.failures import error_responses
from orchestrator.api.models import API_PREFIX
from orchestrator.core import fires
from orchestrator.core.schedules import SCHEDULE_ID, Schedule, check
from orchestrator.core.tenants import DEFAULT_TENANT, sees
from orchestrator.errors import ApiError, ScheduleConflict, ScheduleInvalid, ScheduleNotFound
from orchestrator.runtime.scheduler import ALIVE_WITHIN_S, check_runnable
from orchestrator.settings import ApiToken
from orchestrator.store.schedules import ScheduleState, ScheduleStore

router = APIRouter(prefix=API_PREFIX, tags=["schedules"])
ScheduleId = Annotated[str, Path(pattern=SCHEDULE_ID, max_length=100)]


async def read_schedules(request: Request, credentials: Credentials) -> ApiToken:
    """Dependency: the caller may read schedules (``schedules:read``)."""
    return authorize(request.app.state.tokens, credentials, "schedules:read")


async def write_schedules(request: Request, credentials: Credentials) -> ApiToken:
    """Dependency: the caller may add, change and delete schedules (``schedules:write``)."""
    return authorize(request.app.state.tokens, credentials, "schedules:write")


class ScheduleView(BaseModel):
    """A schedule, its state and its next fires (Unix s)."""

    schedule: dict[str, Any]
    source: str = Field(description="declared (beside its workflow) or api.")
    paused: bool
    next_fire: int | None
    last_fire: int | None
    last_run: str | None
    queued: list[int]
    started: int
    skipped: int
    missed: int
    failed: int
    last_error: str | None
    upcoming: list[int] = Field(default_factory=list)


class ScheduleList(BaseModel):
    """Every schedule, and the schedulers seen in the last 10 s."""

    schedules: list[ScheduleView]
    schedulers: list[str]


TENANT_PREFIX = "t__"
"""Stored ids of a tenant's schedules (other than the default tenant's) start with this."""


def stored_id(token: ApiToken, schedule_id: str) -> str:
    """The id under which ``token``'s tenant's schedule ``schedule_id`` is stored.

    Raises:
        ApiError: 422 when the stored id would be longer than a schedule id may be.
    """
    if token.tenant == DEFAULT_TENANT:
        return schedule_id
    sid = f"{TENANT_PREFIX}{token.tenant}__{schedule_id}"
    if len(sid) > 100:
        raise ApiError(422, "schedule_invalid", f"schedule id {schedule_id!r} is too long "
                       f"for tenant {token.tenant!r} (the tenant's name and the id share "
                       "100 characters)", "Use a shorter id.")
    return sid


def _public_id(token: ApiToken, sid: str) -> str:
    prefix = f"{TENANT_PREFIX}{token.tenant}__"
    if token.tenant != DEFAULT_TENANT and sid.startswith(prefix):
        return sid[len(prefix):]
    return sid


def _view(st: ScheduleState, token: ApiToken, count: int = 0,
          now: float = 0.0) -> ScheduleView:
    upcoming: list[int] = []
    if count and not st.paused and st.next is not None:
        upcoming = fires.upcoming(st.spec, min(st.next - 1, now), count)
    data = st.as_json()
    data["schedule"] = {**data["schedule"], "id": _public_id(token, st.spec.id)}
    return ScheduleView(**data, upcoming=upcoming)


def _store(ctx: ApiContext) -> ScheduleStore:
    store = ctx.coordinator.store
    return ScheduleStore(store.client, store.keys)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except ScheduleNotFound as exc:
        raise ApiError(404, "schedule_not_found", str(exc),
                       "GET /v1/schedules lists the schedules.") from None
    except ScheduleConflict as exc:
        raise ApiError(409, "schedule_conflict", str(exc),
                       "PUT /v1/schedules/{id} replaces one added through the API; a "
                       "declared one changes in its workflow's definition.") from None
    except ScheduleInvalid as exc:
        raise ApiError(422, "schedule_invalid", str(exc),
                       "Correct the schedule as the message says.") from None


@router.get("/schedules", response_model=ScheduleList, summary="List schedules",
            responses=error_responses(401, 403))
def list_schedules(ctx: Annotated[ApiContext, Depends(context)],
                   _token: Annotated[ApiToken, Depends(read_schedules)]) -> ScheduleList:
    """Every schedule of the token's tenant (every tenant's with ``admin``; paused ones
    too), and the schedulers running."""
    store = _store(ctx)
    viewer = access.viewer_tenant(_token)
    return ScheduleList(schedules=[_view(s, _token) for s in store.all()
                                   if sees(viewer, s.tenant)],
                        schedulers=store.alive(ALIVE_WITHIN_S))


def _owned(store: ScheduleStore, token: ApiToken, schedule_id: str) -> None:
    """Return if the token may see the schedule.

    Raises:
        ScheduleNotFound: no such schedule, or another tenant's (the same error).
    """
    owner = store.tenant(schedule_id)
    if owner is None or not sees(access.viewer_tenant(token), owner):
        raise store.missing(_public_id(token, schedule_id))


def _save(ctx: ApiContext, token: ApiToken, spec: Schedule, replace: bool) -> ScheduleView:
    if token.tenant == DEFAULT_TENANT and spec.id.startswith(TENANT_PREFIX):
        raise ApiError(422, "schedule_invalid", f"schedule ids starting with "
                       f"{TENANT_PREFIX!r} are the tenants' own", "Use another id.")
    sid = stored_id(token, spec.id)
    with _errors():
        check(spec)
        store = _store(ctx)
        now = store.now()
        check_runnable(ctx.catalog, spec, now)
        if replace and store.tenant(sid) not in (None, token.tenant):
            raise store.missing(spec.id)  # an admin's id of another tenant: not its own
        stored = spec.model_copy(update={"id": sid})
        store.put(stored, "api", fires.next_fire(stored, now), replace=replace,
                  tenant=token.tenant)
        return _view(store.get(sid), token, 5, now)


@router.post("/schedules", response_model=ScheduleView, status_code=201,
             summary="Add a schedule", responses=error_responses(400, 401, 403, 404, 409, 422, 503))
def add_schedule(spec: Schedule, response: Response,
                 ctx: Annotated[ApiContext, Depends(context)],
                 _token: Annotated[ApiToken, Depends(write_schedules)]) -> ScheduleView:
    """Add a schedule; running schedulers fire it from its next fire (409 if the id is
    taken).  The body is the schedule: ``id``, ``workflow``, ``cron`` and ``timezone`` or
    ``every_s``, ``input`` or ``input_expr``, ``overlap``, ``catch_up``."""
    view = _save(ctx, _token, spec, replace=False)
    response.headers["Location"] = f"{API_PREFIX}/schedules/{spec.id}"
    return view


@router.put("/schedules/{schedule_id}", response_model=ScheduleView,
            summary="Add or replace a schedule",
            responses=error_responses(400, 401, 403, 404, 409, 422, 503))
def put_schedule(schedule_id: ScheduleId, spec: Schedule,
                 ctx: Annotated[ApiContext, Depends(context)],
                 _token: Annotated[ApiToken, Depends(write_schedules)]) -> ScheduleView:
    """Add or replace the schedule ``schedule_id`` (the body's ``id`` must match).  Its
    next fire is kept unless the timing (cron, timezone, every_s, anchor) changes."""
    if spec.id != schedule_id:
        raise ApiError(422, "schedule_invalid", f"the body's id {spec.id!r} is not the "
                       f"path's {schedule_id!r}", "Send the same id in both.")
    return _save(ctx, _token, spec, replace=True)


@router.get("/schedules/{schedule_id}", response_model=ScheduleView,
            summary="Read a schedule", responses=error_responses(401, 403, 404, 422))
def get_schedule(schedule_id: ScheduleId, ctx: Annotated[ApiContext, Depends(context)],
                 _token: Annotated[ApiToken, Depends(read_schedules)],
                 count: Annotated[int, Query(ge=0, le=100)] = 5) -> ScheduleView:
    """The schedule, its state and its next ``count`` fires."""
    store = _store(ctx)
    sid = stored_id(_token, schedule_id)
    with _errors():
        _owned(store, _token, sid)
        return _view(store.get(sid), _token, count, store.now())


@router.post("/schedules/{schedule_id}/pause", response_model=ScheduleView,
             summary="Pause a schedule", responses=error_responses(401, 403, 404, 422))
def pause_schedule(schedule_id: ScheduleId, ctx: Annotated[ApiContext, Depends(context)],
                   _token: Annotated[ApiToken, Depends(write_schedules)]) -> ScheduleView:
    """Pause: nothing fires until resumed (idempotent)."""
    store = _store(ctx)
    sid = stored_id(_token, schedule_id)
    with _errors():
        _owned(store, _token, sid)
        store.set_paused(sid, True, None)
        return _view(store.get(sid), _token)


@router.post("/schedules/{schedule_id}/resume", response_model=ScheduleView,
             summary="Resume a schedule", responses=error_responses(401, 403, 404, 422))
def resume_schedule(schedule_id: ScheduleId, ctx: Annotated[ApiContext, Depends(context)],
                    _token: Annotated[ApiToken, Depends(write_schedules)]) -> ScheduleView:
    """Resume from the first fire after now (fires due while paused do not run)."""
    store = _store(ctx)
    sid = stored_id(_token, schedule_id)
    with _errors():
        _owned(store, _token, sid)
        st = store.get(sid)
        now = store.now()
        store.set_paused(sid, False, fires.next_fire(st.spec, now))
        return _view(store.get(sid), _token, 5, now)


@router.delete("/schedules/{schedule_id}", status_code=204, summary="Delete a schedule",
               responses=error_responses(401, 403, 404, 409, 422))
def delete_schedule(schedule_id: ScheduleId, ctx: Annotated[ApiContext, Depends(context)],
                    _token: Annotated[ApiToken, Depends(write_schedules)]) -> Response:
    """Delete a schedule added through the API or the CLI (its runs stay)."""
    store = _store(ctx)
    sid = stored_id(_token, schedule_id)
    with _errors():
        _owned(store, _token, sid)
        store.delete(sid)
    return Response(status_code=204)
