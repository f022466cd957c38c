"""Run endpoints: submit (idempotent, optionally waiting, with a callback), read, list,
cancel, and follow (server-sent events)."""

from __future__ import annotations

import json
import math
import uuid
from typing import Annotated, Any
from urllib.parse import urlsplit

import anyio
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from orchestrator.api import access, idempotency, quotas, streams
from orchestrator.api.access import detail_of
from orchestrator.api.auth import read_runs, write_runs
from orchestrator.api.deps import ApiContext, context
from orchestrator.api.failures import error_responses
from orchestrator.api.models import (
    API_PREFIX,
    IDEMPOTENCY_HEADER,
    REPLAYED_HEADER,
    ResumeRequest,
    RunOut,
    RunPage,
    RunSummary,
)
from orchestrator.api.responses import model_response, unencodable
from orchestrator.callbacks.delivery import MAX_URL_CHARS, check_url
from orchestrator.callbacks.destinations import DestinationRefused, checked, networks
from orchestrator.core.models import WORKFLOW_NAME
from orchestrator.core.origin import Origin, OriginKind
from orchestrator.core.priorities import Priority
from orchestrator.core.states import RunStatus
from orchestrator.core.tenants import DEFAULT_TENANT
from orchestrator.errors import ApiError, RunDamaged, RunNotFound
from orchestrator.runtime.definitions import Definition
from orchestrator.runtime.tracing import trace_link
from orchestrator.settings import ApiToken

MAX_WAIT_S = 60.0
MAX_INPUT_DEPTH = 64
MAX_PAGE = 200

router = APIRouter(prefix=API_PREFIX, tags=["runs"])

RunId = Annotated[str, Path(min_length=1, max_length=200, description="The run's id.")]
WORKFLOW_NAME_MAX = 200
"""The longest workflow name a path takes (:data:`WorkflowName`)."""
WorkflowName = Annotated[str, Path(pattern=WORKFLOW_NAME, max_length=WORKFLOW_NAME_MAX,
                                   description="A cataloged workflow's name.")]
SUBMIT_PATH = "/workflows/{name}/runs"
"""Where runs are started, under :data:`API_PREFIX` (also :mod:`.plain_submit`'s)."""

_LOCATION = {"Location": {"description": "The run: /v1/runs/{run_id}",
                          "schema": {"type": "string"}}}
_REPLAYED = {REPLAYED_HEADER: {"description": "`true` when an Idempotency-Key repeat "
                               "answered with the run of the first request.",
                               "schema": {"type": "string"}}}
_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "description": "The run input (any JSON value; it must match the workflow's "
                       "input_schema). An empty body means `{}`.",
        "content": {"application/json": {"schema": {}}},
    },
}


def _bad_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _too_deep(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict | list):
            if depth > limit:
                return True
            items = v.values() if isinstance(v, dict) else v
            stack.extend((x, depth + 1) for x in items)
    return False


async def read_json_body(request: Request) -> Any:
    """The request's JSON body, or None when it is empty.

    Raises:
        ApiError: 415 for a body that is not declared JSON, 400 for one that does not
            parse, 422 for one nested deeper than :data:`MAX_INPUT_DEPTH`; 413 (from the
            body limit) for one too large.
    """
    body = await request.body()
    if not body.strip():
        return None
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise ApiError(415, "unsupported_media_type",
                       f"the body must be JSON, not {media!r}",
                       "Send the run input with `Content-Type: application/json`.")
    try:
        value = json.loads(body, parse_constant=_bad_constant, parse_float=_finite)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}",
                       "Send the run input as one JSON document (UTF-8).") from None
    where = unencodable(value)
    if where is not None:
        raise ApiError(400, "invalid_unicode",
                       f"the body has a string at {where} that is not valid Unicode (a lone "
                       "UTF-16 surrogate such as \\ud800)",
                       "Send text as valid Unicode; binary data base64-encoded.")
    if _too_deep(value, MAX_INPUT_DEPTH):
        raise ApiError(422, "input_too_deep",
                       f"the run input is nested deeper than {MAX_INPUT_DEPTH} levels",
                       "Flatten the input.")
    return value


def _run_json(out: RunOut, status: int, headers: dict[str, str]) -> Response:
    return model_response(out, status, headers)


@router.post(
    SUBMIT_PATH,
    status_code=201,
    summary="Start a run",
    response_model=RunOut,
    openapi_extra=_BODY_DOC,
    responses={
        201: {"model": RunOut, "description": "Run created (no `wait`).",
              "headers": _LOCATION},
        200: {"model": RunOut, "description": "With `wait`: the run ended in time. "
              "Without: an Idempotency-Key repeat (the first request's run, as it is now).",
              "headers": {**_LOCATION, **_REPLAYED}},
        202: {"model": RunOut, "description": "With `wait`: the run had not ended in time; "
              "follow Location.", "headers": {**_LOCATION, **_REPLAYED}},
        **error_responses(400, 401, 403, 404, 409, 413, 415, 422, 429, 503),
    },
)
async def submit_run(
    request: Request,
    name: WorkflowName,
    ctx: Annotated[ApiContext, Depends(context)],
    _token: Annotated[ApiToken, Depends(write_runs)],
    wait: Annotated[float | None, Query(
        ge=0, le=MAX_WAIT_S, description="Seconds to wait for the run to end (at most "
        f"{MAX_WAIT_S:g}): 200 with the ended run, else 202 with Location.")] = None,
    callback_url: Annotated[str | None, Query(
        max_length=MAX_URL_CHARS, description="http(s) URL to POST the run to when it "
        "ends, signed with X-Orchestrator-Signature: sha256=<hex HMAC of the body>.")] = None,
    version: Annotated[str | None, Query(
        pattern="^[0-9a-f]{6,16}$", description="Run this stored version of the workflow "
        "(GET /v1/workflows/{name}/versions; a prefix of 6+ hex digits will do) instead "
        "of the current one.")] = None,
    priority: Annotated[Priority, Query(
        description="The band of queues the run's steps go to: a high run's steps "
        "overtake queued normal and low ones.")] = Priority.NORMAL,
    idempotency_key: Annotated[str | None, Header(
        alias=IDEMPOTENCY_HEADER, min_length=1, max_length=idempotency.MAX_KEY_CHARS,
        description="Repeats of the same request within the idempotency window return "
        "the same run; the same key with another request is a 409.")] = None,
) -> Response:
    """Start a run of workflow ``name`` with the JSON body as its input.

    Answers 201 with the run and ``Location`` (200 for an Idempotency-Key repeat); with
    ``wait``, 200 if the run ended within it, else 202.  A submit with a positive
    ``wait`` holds a wait slot of its token until it answers (429 ``too_many_waits``
    before any run is made).  (Held here, not by a dependency with ``yield``: FastAPI's
    machinery for one cost every submit 6 % more API CPU, waiting or not.)
    """
    slot = quotas.hold(request, "wait") if wait else None
    try:
        return await start_run(request, name, ctx, _token, wait, callback_url, version,
                               priority, idempotency_key)
    finally:
        if slot is not None:
            slot.release()


async def start_run(request: Request, name: str, ctx: ApiContext, _token: ApiToken,
                    wait: float | None, callback_url: str | None, version: str | None,
                    priority: Priority, idempotency_key: str | None) -> Response:
    """:func:`submit_run`'s work, its wait slot (if any) held, the token checked; also
    the plain submit's (:mod:`orchestrator.api.plain_submit`, every parameter at its
    default)."""
    settings = ctx.settings
    wf = ctx.catalog.get(name) if version is None else (await anyio.to_thread.run_sync(
        ctx.coordinator.stored, name, version)).wf
    if callback_url is not None:
        if not settings.callback_secret.get_secret_value():
            raise ApiError(422, "callbacks_disabled",
                           "this server sends no callbacks (it has no callback secret)",
                           "Leave out callback_url and follow the run; or ask the operator "
                           "to set ORCH_CALLBACK_SECRET.")
        try:
            check_url(callback_url)
        except ValueError as exc:
            raise ApiError(422, "callback_url_invalid", str(exc),
                           "Pass an absolute http:// or https:// URL.") from None
        parts = urlsplit(callback_url)
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        try:  # resolved and checked again at every try (DNS rebinding)
            await anyio.to_thread.run_sync(checked, parts.hostname or "", port,
                                           networks(settings.callback_allowed_networks))
        except DestinationRefused as exc:
            message, _, fix = str(exc).partition(" Fix: ")
            raise ApiError(422, "callback_url_forbidden", message,
                           fix or "Use a public receiver.") from None
    if wait is not None and wait > settings.api_max_wait_s:
        raise ApiError(422, "wait_too_long",
                       f"wait is capped at {settings.api_max_wait_s:g} s on this server",
                       "Wait less, then follow the run's Location.")
    run_input = await read_json_body(request)
    run_id, fresh = uuid.uuid4().hex, True
    reader = ctx.reader
    tenant = _token.tenant  # keys are scoped to it: a key never names another's run
    if idempotency_key is not None:
        what = wf.name if version is None else f"{wf.name}@{version}"
        if priority is not Priority.NORMAL:  # (a normal run's fingerprint is as it was)
            what += f"#{priority.value}"
        fp = idempotency.fingerprint(what, run_input, callback_url)
        claim = await idempotency.claim(reader, idempotency_key, fp, run_id, tenant)
        run_id, fresh = claim.run_id, claim.fresh
    created: RunOut | None = None
    if fresh:
        origin = Origin(kind=OriginKind.API, by=_token.name or None,
                        tenant=None if tenant == DEFAULT_TENANT else tenant)
        made = False

        def create() -> RunOut | None:
            # one trip to a worker thread for the whole submit: the callback's registration,
            # the run (Coordinator.submit) and, unless the caller waits, the answer's read
            nonlocal made
            if callback_url is not None:
                ctx.registry.register(run_id, callback_url, detail_of(_token))
            ctx.coordinator.submit(wf.name, run_input, run_id, origin=origin,
                                   version=version, priority=priority)
            made = True
            return None if wait else access.own_view(ctx, _token, run_id, wf.version)

        async def create_on_loop(d: Definition) -> RunOut | None:
            # the common submit (see AsyncSubmitter.ready): the same scripts, no thread
            nonlocal made
            view = await ctx.submitter.submit(d, run_input, run_id, origin, priority,
                                              read=not wait)
            made = True
            return None if view is None else \
                RunOut.from_view(view).shaped(access.detail_of(_token))

        fast = ctx.submitter.ready(wf.name, priority) \
            if version is None and callback_url is None else None
        try:
            created = await (anyio.to_thread.run_sync(create) if fast is None
                             else create_on_loop(fast))
        except BaseException:
            with anyio.CancelScope(shield=True):
                if made:  # the run exists (its read failed, or the caller went away)
                    if idempotency_key is not None:
                        await idempotency.confirm(reader, idempotency_key,
                                                  settings.idempotency_window_s, tenant)
                else:
                    if callback_url is not None:
                        await anyio.to_thread.run_sync(ctx.registry.unregister, run_id)
                    if idempotency_key is not None:
                        await idempotency.release(reader, idempotency_key, run_id, tenant)
            raise
        if idempotency_key is not None:
            await idempotency.confirm(reader, idempotency_key,
                                      settings.idempotency_window_s, tenant)
    elif not await reader.exists(run_id):
        raise idempotency.in_progress(idempotency_key or "")
    headers = {"Location": f"{API_PREFIX}/runs/{run_id}"}
    if not fresh:
        headers[REPLAYED_HEADER] = "true"
    if wait:
        ended = await streams.wait_for_end(ctx, run_id, wait)
        out = await _view(ctx, _token, run_id)
        return _run_json(out, 200 if ended or out.ended else 202, headers)
    if created is not None:
        return _run_json(created, 201, headers)
    return _run_json(await _view(ctx, _token, run_id), 200, headers)


async def _view(ctx: ApiContext, token: ApiToken, run_id: str) -> RunOut:
    return await anyio.to_thread.run_sync(access.view, ctx, token, run_id)


@router.get("/runs/{run_id}", response_model=RunOut, summary="Read a run",
            responses=error_responses(401, 403, 404, 410, 422, 503))
def get_run(run_id: RunId, ctx: Annotated[ApiContext, Depends(context)],
            _token: Annotated[ApiToken, Depends(read_runs)]) -> RunOut:
    """The run: status, every step (status, attempts, duration, error) and outputs, and
    its trace id when traces are configured.  Step tracebacks need ``runs:tracebacks``;
    another tenant's run is a 404, as an unknown one."""
    out = access.view(ctx, _token, run_id)
    trace = trace_link(ctx.settings, run_id)
    return out.model_copy(update={"trace_id": trace["trace_id"]}) if trace else out


@router.get("/runs", response_model=RunPage, summary="List runs",
            responses=error_responses(401, 403, 422, 503))
def list_runs(
    ctx: Annotated[ApiContext, Depends(context)],
    _token: Annotated[ApiToken, Depends(read_runs)],
    workflow: Annotated[str | None, Query(pattern=WORKFLOW_NAME, max_length=200,
                                          description="Only runs of this workflow.")] = None,
    status: Annotated[RunStatus | None, Query(description="Only runs in this status.")]
    = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> RunPage:
    """Runs of the token's tenant (every tenant's with ``admin``), newest first, filtered
    by workflow and status; paginated by limit/offset.

    A page may hold fewer than ``limit`` runs while ``next_offset`` is set: runs past
    their retention are left out, and so are other tenants' runs when the default
    tenant's are listed.
    """
    store = ctx.coordinator.store
    ids, read = store.page_runs(workflow, status, offset, limit, access.viewer_tenant(_token))
    runs: list[RunSummary] = []
    for rid in ids:
        try:
            rec = store.run(rid)
        except (RunNotFound, RunDamaged):
            continue  # expired meanwhile, or damaged (GET /v1/runs/{id} says which)
        runs.append(RunSummary(run_id=rec.run_id, workflow=rec.workflow, version=rec.version,
                               status=rec.status, created_at=rec.created_at,
                               ended_at=rec.ended_at))
    return RunPage(runs=runs, limit=limit, offset=offset,
                   next_offset=offset + read if read == limit else None)


@router.post("/runs/{run_id}/cancel", response_model=RunOut, summary="Cancel a run",
             responses=error_responses(401, 403, 404, 409, 422, 503))
def cancel_run(run_id: RunId, ctx: Annotated[ApiContext, Depends(context)],
               _token: Annotated[ApiToken, Depends(write_runs)],
               compensate: Annotated[bool, Query(
                   description="Unwind instead: running steps finish, then the "
                   "compensations of every succeeded step run (status `compensating`, "
                   "then `compensated` or `compensation_failed`).")] = False) -> RunOut:
    """Cancel a run: pending steps never start, running ones are revoked.

    Answers 409 ``run_ended`` if the run had already ended (or is being unwound); 404 for
    another tenant's run, as for an unknown one.
    """
    coord = ctx.coordinator
    access.check_run(ctx, access.viewer_tenant(_token), run_id)
    if not coord.cancel(run_id, compensate=compensate):
        status = coord.store.run(run_id).status.value
        raise ApiError(409, "run_ended", f"run {run_id!r} already ended ({status})",
                       "Nothing to cancel; read the run for its outcome.")
    return access.view(ctx, _token, run_id)


@router.post("/runs/{run_id}/resume", response_model=RunOut, status_code=201,
             summary="Resume a run", responses={
                 201: {"model": RunOut, "description": "The new run.",
                       "headers": _LOCATION},
                 **error_responses(400, 401, 403, 404, 409, 413, 415, 422, 503)})
def resume_run(run_id: RunId, ctx: Annotated[ApiContext, Depends(context)],
               _token: Annotated[ApiToken, Depends(write_runs)],
               body: ResumeRequest | None = None) -> Response:
    """Start a new run that resumes this one (it must have ended): the succeeded steps
    that are not downstream of ``from_step`` or of a step that did not succeed keep their
    recorded outputs; the rest run.  Both runs record the lineage (``resumed_from``,
    ``resumes``).  409 ``resume_refused`` names what stops it (the run still going, a
    reused step changed in ``version``); 404 for another tenant's run, as for an unknown
    one."""
    req = body or ResumeRequest()
    access.check_run(ctx, access.viewer_tenant(_token), run_id)
    new_id, _ = ctx.coordinator.resume(
        run_id, req.from_step, req.input_patch, req.version,
        origin=Origin(kind=OriginKind.API, by=_token.name or None))
    out = access.view(ctx, _token, new_id)
    return _run_json(out, 201, {"Location": f"{API_PREFIX}/runs/{new_id}"})


_SSE_EVENT: dict[str, Any] = {
    # one event of the stream, as the HTML spec parses it (OpenAPI 3.2's itemSchema; 3.0
    # and 3.1 tools such as schemathesis read `schema` as the per-event schema)
    "type": "object", "required": ["data"],
    "properties": {"event": {"type": "string", "description": "run, step or end"},
                   "data": {"type": "string", "contentMediaType": "application/json"},
                   "id": {"type": "string"},
                   "retry": {"type": "integer", "minimum": 0}}}


@router.get(
    "/runs/{run_id}/events",
    summary="Follow a run (server-sent events)",
    response_class=StreamingResponse,
    responses={
        200: {"description": "`text/event-stream`: events `run` and `step` (data: a "
              "RunEvent, id: the stream id), then `end` (data: the final Run).",
              "content": {"text/event-stream": {"schema": _SSE_EVENT}}},
        **error_responses(401, 403, 404, 422, 429, 503),
    },
)
async def run_events(
    request: Request,
    run_id: RunId,
    ctx: Annotated[ApiContext, Depends(context)],
    _token: Annotated[ApiToken, Depends(read_runs)],
    last_event_id: Annotated[str | None, Header(
        alias="Last-Event-ID", pattern=r"^[0-9]{1,19}(-[0-9]{1,19})?$",
        description="Resume after this event id.")] = None,
) -> StreamingResponse:
    """Stream the run's events live until it ends (replaying earlier ones first)."""
    slot = quotas.hold(request, "stream")  # first: a refusal costs no store read
    try:
        await access.acheck_run(ctx, access.viewer_tenant(_token), run_id)
    except BaseException:
        slot.release()
        raise
    return quotas.HeldStream(  # the slot is given back when the stream ends
        slot,
        streams.run_events(ctx, run_id, last_event_id or "0-0", access.detail_of(_token)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
