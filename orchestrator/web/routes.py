"""The web UI's routes, under ``/ui``: sign-in and sign-out, the pages, their JSON data
(``/ui/data/...``), a run's live events, output downloads and cancel.

Pages and data need a session (:mod:`orchestrator.web.session`) whose token grants the
scope of what they show: ``runs:read`` for runs, workers and queues, ``workflows:read``
for workflows; cancel needs ``runs:write`` and the session's CSRF token, so a read-only
token sees no cancel button and the server refuses the request anyway.  A page without a
session redirects to the sign-in form; data without one answer 401 in the API's error
shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

import anyio
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from orchestrator.api import access, quotas, streams
from orchestrator.api.deps import ApiContext, context
from orchestrator.core.models import WORKFLOW_NAME
from orchestrator.core.origin import OriginKind
from orchestrator.core.states import RunStatus
from orchestrator.errors import ApiError
from orchestrator.settings import ApiScope, Settings
from orchestrator.web import pages, views
from orchestrator.web.session import (
    COOKIE_PATH,
    CSRF_FIELD,
    CSRF_HEADER,
    LOGIN_COOKIE,
    LOGIN_NONCE_S,
    SESSION_COOKIE,
    Sessions,
    Viewer,
    csrf_ok,
)

STATIC_DIR = Path(__file__).parent / "static"
MAX_FORM_BYTES = 8192

router = APIRouter(prefix="/ui", include_in_schema=False)

def install(app: FastAPI, settings: Settings) -> None:
    """Serve the web UI from ``app``: its routes, its static files and its sessions."""
    app.state.ui_sessions = Sessions.of(settings)
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")


def _sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.ui_sessions
    return sessions


def _viewer(request: Request) -> Viewer | None:
    return _sessions(request).read(request.cookies.get(SESSION_COOKIE))


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _safe_next(target: str | None) -> str:
    """Where to go after sign-in: a UI path only (no open redirect)."""
    if (target and target.startswith("/ui/") and not target.startswith("//")
            and "\\" not in target and "\n" not in target and "\r" not in target):
        return target
    return "/ui/runs"


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=pages.SECURITY_HEADERS)


def _page(request: Request, scope: ApiScope, render: Any) -> Response:
    viewer = _viewer(request)
    if viewer is None:
        target = quote(request.url.path, safe="/")
        return RedirectResponse(f"/ui/login?next={target}", status_code=303,
                                headers={"Cache-Control": "no-store"})
    if not viewer.can(scope):
        return _html(pages.forbidden(viewer, scope), 403)
    return _html(render(viewer))


def _require(request: Request, scope: ApiScope) -> Viewer:
    viewer = _viewer(request)
    if viewer is None:
        raise ApiError(401, "signed_out", "no valid web UI session (signed out or expired)",
                       "Sign in again at /ui/login.")
    if not viewer.can(scope):
        raise ApiError(403, "insufficient_scope",
                       f"this session's token does not grant the scope {scope!r}",
                       f"Sign in with a token whose scopes include {scope!r}.")
    return viewer


async def runs_reader(request: Request) -> Viewer:
    """Dependency: a session that may read runs (``runs:read``)."""
    return _require(request, "runs:read")


async def runs_writer(request: Request,
                csrf: Annotated[str | None, Header(alias=CSRF_HEADER)] = None) -> Viewer:
    """Dependency: a session that may cancel runs (``runs:write``), with its CSRF token
    in the ``X-CSRF-Token`` header."""
    viewer = _require(request, "runs:write")
    if not csrf_ok(viewer, csrf):
        raise ApiError(403, "csrf_failed", "the request carries no valid CSRF token",
                       f"Send the page's CSRF token in the {CSRF_HEADER} header (reload "
                       "the page if the session changed).")
    return viewer


async def workflows_reader(request: Request) -> Viewer:
    """Dependency: a session that may read workflows (``workflows:read``)."""
    return _require(request, "workflows:read")


Ctx = Annotated[ApiContext, Depends(context)]


# --- sign-in -----------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
@router.get("/", response_class=HTMLResponse)
def home() -> Response:
    """The UI's start: the runs."""
    return RedirectResponse("/ui/runs", status_code=303)


def _login_form(request: Request, next_url: str, message: str = "",
                status: int = 200) -> Response:
    cookie, field = _sessions(request).login_nonce()
    resp = _html(pages.login(field, next_url, message), status)
    resp.set_cookie(LOGIN_COOKIE, cookie, max_age=LOGIN_NONCE_S, path=COOKIE_PATH,
                    httponly=True, samesite="strict", secure=_secure(request))
    return resp


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: Annotated[str | None, Query(max_length=500)] = None
               ) -> Response:
    """The sign-in form."""
    return _login_form(request, _safe_next(next))


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise ApiError(413, "body_too_large", "the form is too large",
                       "Send only the sign-in form's fields.")
    fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
    return {k: v[0] for k, v in fields.items() if v}


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """Check the posted token (and the form's CSRF nonce); on success set the session
    cookie and go to ``next``.  The token is never logged nor put in a URL."""
    form = await _form(request)
    sessions = _sessions(request)
    next_url = _safe_next(form.get("next"))
    if not sessions.login_ok(request.cookies.get(LOGIN_COOKIE), form.get(CSRF_FIELD, "")):
        return _login_form(request, next_url, "The sign-in form expired or did not come "
                           "from this server. Sign in again.", 403)
    cookie = sessions.sign_in(form.get("token", ""))
    if cookie is None:
        return _login_form(request, next_url, "That token is not valid. Use a token from "
                           "the server's ORCH_API_TOKENS.", 401)
    resp = RedirectResponse(next_url, status_code=303, headers={"Cache-Control": "no-store"})
    resp.set_cookie(SESSION_COOKIE, cookie, max_age=sessions.lifetime_s, path=COOKIE_PATH,
                    httponly=True, samesite="strict", secure=_secure(request))
    resp.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    return resp


@router.post("/logout", response_class=HTMLResponse)
async def logout(request: Request) -> Response:
    """End the session (with its CSRF token in the form), back to the sign-in form."""
    form = await _form(request)
    viewer = _viewer(request)
    if viewer is not None and not csrf_ok(viewer, form.get(CSRF_FIELD)):
        raise ApiError(403, "csrf_failed", "the sign-out form carries no valid CSRF token",
                       "Sign out from the page's own button (reload the page first).")
    resp = RedirectResponse("/ui/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return resp


# --- pages -------------------------------------------------------------------------------


@router.get("/runs", response_class=HTMLResponse)
def runs_page(
    request: Request,
    workflow: Annotated[str | None, Query(max_length=200)] = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
    origin: Annotated[str | None, Query(max_length=20)] = None,
    since: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    """The runs, filtered (the filters are read by the page's script), live."""
    del workflow, status, origin, since
    return _page(request, "runs:read", lambda v: pages.page(v, "runs", "Runs", "runs"))


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str) -> Response:
    """One run: graph, Gantt, steps, live."""
    return _page(request, "runs:read", lambda v: pages.page(
        v, "runs", f"Run {run_id}", "run", {"run-id": run_id}))


@router.get("/workflows", response_class=HTMLResponse)
def workflows_page(request: Request) -> Response:
    """Every workflow with its recent runs' statistics."""
    return _page(request, "workflows:read",
                 lambda v: pages.page(v, "workflows", "Workflows", "workflows"))


@router.get("/workflows/{name}", response_class=HTMLResponse)
def workflow_page(request: Request, name: str) -> Response:
    """One workflow: graph, version, input schema, steps, recent runs."""
    return _page(request, "workflows:read", lambda v: pages.page(
        v, "workflows", f"Workflow {name}", "workflow", {"workflow": name}))


@router.get("/workers", response_class=HTMLResponse)
def workers_page(request: Request) -> Response:
    """Queues and workers, live."""
    return _page(request, "runs:read", lambda v: pages.page(
        v, "workers", "Workers and queues", "workers"))


# --- data --------------------------------------------------------------------------------


@router.get("/data/runs")
def runs_data(
    ctx: Ctx, _viewer: Annotated[Viewer, Depends(runs_reader)],
    workflow: Annotated[str | None, Query(pattern=WORKFLOW_NAME, max_length=200)] = None,
    status: RunStatus | None = None, origin: OriginKind | None = None,
    since: Annotated[float | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """Runs of the session's tenant, newest first, by workflow, status, origin and
    creation time."""
    return views.list_runs(ctx.coordinator, workflow=workflow or None, status=status,
                           origin=origin, since=since, limit=limit,
                           tenant=_tenant(_viewer))


def _tenant(viewer: Viewer) -> str | None:
    """The tenant whose runs the session sees (None: every tenant's)."""
    return access.tenant_filter(viewer.scopes, viewer.tenant)


def _check(ctx: ApiContext, viewer: Viewer, run_id: str) -> None:
    """404 ``run_not_found`` for another tenant's run, as for an unknown one."""
    access.check_run(ctx, _tenant(viewer), run_id)


@router.get("/data/runs/{run_id}")
def run_data(run_id: str, ctx: Ctx, viewer: Annotated[Viewer, Depends(runs_reader)]
             ) -> dict[str, Any]:
    """Everything the run page shows (see :func:`views.run_detail`); tracebacks only
    with ``runs:tracebacks``."""
    _check(ctx, viewer, run_id)
    out = views.run_detail(ctx.coordinator, run_id, ctx.settings.flower_url,
                           tracebacks=viewer.can("runs:tracebacks"))
    out["can_cancel"] = viewer.can("runs:write")
    return out


def _download(value: Any, name: str) -> Response:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return Response(json.dumps(value, indent=2, sort_keys=True, default=str),
                    media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{safe}.json"',
                             "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})


@router.get("/data/runs/{run_id}/input")
def run_input(run_id: str, ctx: Ctx, _viewer: Annotated[Viewer, Depends(runs_reader)]
              ) -> Response:
    """The run's whole input, as a JSON download."""
    _check(ctx, _viewer, run_id)
    return _download(ctx.coordinator.store.run(run_id).input, f"{run_id}-input")


@router.get("/data/runs/{run_id}/steps/{step_id}/{part}")
def step_part(run_id: str, step_id: str, part: str, ctx: Ctx,
              _viewer: Annotated[Viewer, Depends(runs_reader)]) -> Response:
    """A step's whole ``input`` or ``output``, as a JSON download."""
    _check(ctx, _viewer, run_id)
    coord = ctx.coordinator
    run = coord.store.run(run_id)
    wf = coord.definitions.load(run.version).wf
    if part not in ("input", "output") or step_id not in wf.step_map:
        raise ApiError(404, "not_found", f"run {run_id!r} has no step {step_id!r} {part}",
                       "Use a step id of the run and `input` or `output`.")
    outputs = coord.store.outputs(run_id)
    if part == "output":
        if step_id not in outputs:
            raise ApiError(404, "no_output", f"step {step_id!r} has no output (yet)",
                           "Wait until the step succeeded.")
        return _download(outputs[step_id], f"{run_id}-{step_id}-output")
    value = views.step_input(wf, step_id, run.input, outputs)
    return _download(value, f"{run_id}-{step_id}-input")


@router.get("/data/runs/{run_id}/events")
async def run_events(
    request: Request, run_id: str, ctx: Ctx, _viewer: Annotated[Viewer, Depends(runs_reader)],
    last_event_id: Annotated[str | None, Header(
        alias="Last-Event-ID", pattern=r"^[0-9]{1,19}(-[0-9]{1,19})?$")] = None,
) -> StreamingResponse:
    """The run's events, live (as ``GET /v1/runs/{id}/events``, for the session)."""
    await access.acheck_run(ctx, _tenant(_viewer), run_id)
    detail = access.detail_for(_viewer.scopes)
    # a stream slot of the signed-in token (by name), as the API's streams take
    slot = quotas.quotas_of(request).hold(
        "stream", quotas.token_key(f"ui:{_viewer.tenant}:{_viewer.name}"))
    return quotas.HeldStream(slot, streams.run_events(ctx, run_id, last_event_id or "0-0",
                                                      detail),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/data/runs/{run_id}/cancel")
async def cancel(run_id: str, ctx: Ctx, _viewer: Annotated[Viewer, Depends(runs_writer)]
                 ) -> dict[str, Any]:
    """Cancel the run (``runs:write`` and the CSRF token); 409 if it had ended."""
    await access.acheck_run(ctx, _tenant(_viewer), run_id)
    coord = ctx.coordinator
    if not await anyio.to_thread.run_sync(coord.cancel, run_id):
        status = (await anyio.to_thread.run_sync(coord.store.run, run_id)).status.value
        raise ApiError(409, "run_ended", f"run {run_id!r} already ended ({status})",
                       "Nothing to cancel.")
    return {"run_id": run_id, "status": RunStatus.CANCELLED.value}


@router.get("/data/workflows")
def workflows_data(ctx: Ctx, _viewer: Annotated[Viewer, Depends(workflows_reader)]
                   ) -> dict[str, Any]:
    """Every workflow with its recent runs' success rate and duration percentiles (the
    session's tenant's runs)."""
    return views.workflows(ctx.coordinator, _tenant(_viewer))


@router.get("/data/workflows/{name}")
def workflow_data(name: str, ctx: Ctx,
                  _viewer: Annotated[Viewer, Depends(workflows_reader)]) -> dict[str, Any]:
    """One workflow (see :func:`views.workflow_detail`; the session's tenant's runs)."""
    return views.workflow_detail(ctx.coordinator, name, _tenant(_viewer))


@router.get("/data/workers")
def workers_data(ctx: Ctx, _viewer: Annotated[Viewer, Depends(runs_reader)]
                 ) -> dict[str, Any]:
    """Queue depths and consumers, and the live workers."""
    return views.workers(ctx.coordinator, ctx.settings.flower_url)
