"""Event-trigger endpoints: inbound webhooks (``POST /v1/hooks/{trigger}``, authenticated
by their signature, no bearer token) and each trigger's handled events (``GET
/v1/triggers/{name}/events``, scope ``triggers:read``).

A webhook's answer says what became of it: 202 and ``Location`` when it started a run,
200 when its event id had started one already (the same run, no new one) or its filter
was false, 401 when it is not authentic (unsigned, a bad signature, a timestamp outside
the window) or names no webhook trigger, 413 past ``ORCH_HOOK_MAX_BODY_BYTES``, 400 when
the body is not JSON, 422 when the trigger's expressions fail on it or the input does
not fit the workflow, 503 when Redis fails (deliver it again: it is deduplicated).

Webhook URLs carry no bearer token, so no tenant: an unknown trigger answers exactly as a
known one answers a request that is not authentic (the same 401 body, after the same body
limit), and a 401 never says why.  Nobody learns which trigger names exist by probing;
the reason goes to the trigger's capped list of events (``triggers:read``) and the log.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.api import access, signatures
from orchestrator.api.auth import read_triggers
from orchestrator.api.failures import error_json, error_responses
from orchestrator.api.models import API_PREFIX
from orchestrator.core.tenants import sees
from orchestrator.core.triggers import (
    TRIGGER_NAME,
    Event,
    EventOutcome,
    EventRecord,
    WebhookSource,
)
from orchestrator.errors import ApiError, Problem, TriggerInvalid, TriggerNotFound
from orchestrator.runtime.catalog import Catalog
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.runtime.triggers import Intake, TriggerTable
from orchestrator.settings import ApiToken, Settings, env_name
from orchestrator.store.triggers import TriggerStore

log = logging.getLogger(__name__)

MAX_EVENTS_PAGE = 200

router = APIRouter(prefix=API_PREFIX, tags=["triggers"])

TriggerName = Annotated[str, Path(pattern=TRIGGER_NAME, max_length=100,
                                  description="The trigger's name.")]


@dataclass(frozen=True)
class Hooks:
    """What the trigger endpoints need, built once per app."""

    table: TriggerTable
    intake: Intake
    max_body_bytes: int


class TriggerInfo(BaseModel):
    """One trigger: its workflow and its source."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    workflow: str
    source: str = Field(description="`webhook` or `stream`.")
    scheme: str | None = Field(None, description="A webhook's signature scheme.")
    stream: str | None = Field(None, description="A stream trigger's stream.")


class TriggerList(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    triggers: list[TriggerInfo]


class TriggerEvents(BaseModel):
    """A trigger's handled events, newest first."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    trigger: str
    events: list[EventRecord]


def _not_authentic() -> ApiError:
    """The one answer to a webhook that is not authentic or names no webhook trigger."""
    return ApiError(
        401, "signature_invalid",
        "the webhook is not authentic, or names no webhook trigger of this server",
        "Sign it with the trigger's secret as its scheme says (Standard Webhooks or "
        "GitHub's X-Hub-Signature-256), with a current timestamp; whoever holds "
        "triggers:read sees why in GET /v1/triggers/<name>/events.")


def install(app: FastAPI, settings: Settings, catalog: Catalog,
            coordinator: Coordinator) -> None:
    """Check the catalog's triggers against ``settings`` and serve their endpoints.

    Raises:
        TriggerInvalid: a trigger names no cataloged workflow, or a webhook trigger's
            secret is missing or malformed.
    """
    table = TriggerTable.build(catalog, settings)
    for name, trig in table.triggers.items():
        src = trig.definition.source
        if isinstance(src, WebhookSource):
            wrong = signatures.check_secret(src.scheme, table.secret(name))
            if wrong:
                raise TriggerInvalid(name, [Problem(
                    "bad_secret", f"its secret in {env_name('trigger_secrets')} is "
                    f"unusable: {wrong}.", "set the sender's secret, exactly.",
                    trig.definition.workflow)])
    store = TriggerStore.from_url(settings.redis_target, settings.key_prefix,
                                  timeout_s=settings.redis_timeout_s)
    app.state.hooks = Hooks(table, Intake(coordinator, store, settings.trigger_events_kept),
                            settings.hook_max_body_bytes)
    app.include_router(router)


def _hooks(request: Request) -> Hooks:
    hooks: Hooks = request.app.state.hooks
    return hooks


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The body, or None once it grows past ``limit`` bytes (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _record_json(rec: EventRecord, status: int, headers: dict[str, str] | None = None
                 ) -> JSONResponse:
    return JSONResponse(rec.model_dump(mode="json", exclude_none=True), status_code=status,
                        headers=headers)


@router.post(
    "/hooks/{trigger}",
    summary="Receive a signed webhook",
    response_model=EventRecord,
    openapi_extra={"security": [], "requestBody": {
        "required": True, "description": "The event (JSON), signed per the trigger's scheme.",
        "content": {"application/json": {"schema": {}}}}},
    responses={
        202: {"model": EventRecord, "description": "A run was started (Location: the run)."},
        200: {"model": EventRecord, "description": "No new run: its event id had started "
              "one already (`duplicate`, Location: that run), or the filter was false "
              "(`filtered`)."},
        **error_responses(400, 401, 413, 422, 503),
    },
)
async def receive(request: Request, trigger: TriggerName) -> JSONResponse:
    """Verify a webhook's signature and start its trigger's run, at most once per event id.

    No bearer token: the signature (Standard Webhooks or GitHub's, per trigger, with the
    secret from ``ORCH_TRIGGER_SECRETS``) authenticates the sender.
    """
    hooks = _hooks(request)
    try:
        trig = hooks.table.get(trigger)
    except TriggerNotFound:
        trig = None
    source = trig.definition.source if trig is not None else None
    intake = hooks.intake
    body = await _read_capped(request, hooks.max_body_bytes)
    if body is None:
        if trig is not None:
            await anyio.to_thread.run_sync(intake.reject, trig.name, "webhook",
                                           f"body larger than {hooks.max_body_bytes} bytes")
        raise ApiError(413, "body_too_large",
                       f"the webhook body is larger than {hooks.max_body_bytes} bytes",
                       f"Send a smaller event (the server's {env_name('hook_max_body_bytes')}).")
    if trig is None or not isinstance(source, WebhookSource):
        log.info("webhook for unknown trigger %r refused (401, as an unsigned one)", trigger)
        raise _not_authentic()
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        message_id = signatures.verify(source, hooks.table.secret(trig.name), body, headers,
                                       time.time())
    except ApiError as exc:
        await anyio.to_thread.run_sync(intake.reject, trig.name, "webhook", exc.message)
        if exc.status_code == 401:
            log.info("webhook for trigger %r refused (401): %s", trig.name, exc.message)
            raise _not_authentic() from None
        raise
    try:
        value = json.loads(body)
    except ValueError as exc:
        why = f"the body is not JSON: {exc}"
        await anyio.to_thread.run_sync(intake.reject, trig.name, "webhook", why, message_id,
                                       EventOutcome.INVALID)
        raise ApiError(400, "malformed_json", f"the webhook {why}",
                       "Send the event as one JSON document (UTF-8).") from None
    event = Event(body=value, headers=headers, message_id=message_id)
    rec = await anyio.to_thread.run_sync(intake.deliver, trig, event, "webhook")
    if rec.outcome is EventOutcome.INVALID:
        return error_json(422, "event_invalid", rec.reason,
                          "Fix the event, or the trigger's filter, input or event_id.")
    location = {"Location": f"{API_PREFIX}/runs/{rec.run_id}"} if rec.run_id else None
    return _record_json(rec, 202 if rec.outcome is EventOutcome.ACCEPTED else 200, location)


@router.get("/triggers", response_model=TriggerList, summary="List the event triggers",
            responses=error_responses(401, 403))
def list_triggers(request: Request,
                  _token: Annotated[ApiToken, Depends(read_triggers)]) -> TriggerList:
    """Every trigger of the token's tenant (every tenant's with ``admin``), with its
    workflow and source."""
    out = []
    viewer = access.viewer_tenant(_token)
    for name, trig in sorted(_hooks(request).table.triggers.items()):
        if not sees(viewer, trig.definition.tenant):
            continue
        src = trig.definition.source
        web = isinstance(src, WebhookSource)
        out.append(TriggerInfo(
            name=name, workflow=trig.definition.workflow, source=src.kind,
            scheme=src.scheme.value if isinstance(src, WebhookSource) else None,
            stream=None if web else getattr(src, "stream", None)))
    return TriggerList(triggers=out)


@router.get("/triggers/{name}/events", response_model=TriggerEvents,
            summary="A trigger's handled events",
            responses=error_responses(401, 403, 404, 422, 503))
def trigger_events(
    request: Request,
    name: TriggerName,
    _token: Annotated[ApiToken, Depends(read_triggers)],
    limit: Annotated[int, Query(ge=1, le=MAX_EVENTS_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> TriggerEvents:
    """The trigger's latest events, newest first: accepted (with the run), duplicate,
    filtered, invalid (with why) and rejected (with why)."""
    hooks = _hooks(request)
    try:
        trig = hooks.table.get(name)
    except TriggerNotFound:
        trig = None
    if trig is None or not sees(access.viewer_tenant(_token), trig.definition.tenant):
        # another tenant's trigger answers as an unknown one
        raise ApiError(404, "trigger_not_found", f"no trigger named {name!r}",
                       "GET /v1/triggers lists the triggers.")
    return TriggerEvents(trigger=name, events=hooks.intake.store.events(name, limit, offset))
