"""The app factory of the HTTP API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI

from orchestrator import web
from orchestrator.api import (
    failures,
    health,
    hooks,
    items,
    runs,
    schedules,
    submissions,
    waits,
    workflows,
)
from orchestrator.api import metrics as metrics_api
from orchestrator.api.auth import TokenTable, any_token
from orchestrator.api.deps import ApiContext
from orchestrator.api.failures import error_responses
from orchestrator.api.limits import BodyLimit, known_query_only
from orchestrator.api.plain_submit import PlainSubmitRoute
from orchestrator.api.quotas import Admission, Quotas
from orchestrator.api.responses import JSONResponse
from orchestrator.runtime.catalog import Catalog, discover, limits_of
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.settings import ApiToken, Settings
from orchestrator.store import AsyncRunReader, CallbackRegistry, RunStore, StoreError

log = logging.getLogger(__name__)

DESCRIPTION = """\
Start, follow and cancel runs of the orchestrator's workflows.

Every endpoint except `/healthz` and `/readyz` needs `Authorization: Bearer <token>`, a
token from the server's `ORCH_API_TOKENS` with the endpoint's scope (`runs:read`,
`runs:write` or `workflows:read`). Every error has the body
`{"error": {"code", "message", "fix"}}`. This schema is at `/openapi.json` (any valid
token).
"""


def create_api(settings: Settings, catalog: Catalog | None = None,
               coordinator: Coordinator | None = None) -> FastAPI:
    """Build the API app.

    Args:
        settings: the one settings object (tokens, limits, Redis, callbacks).
        catalog: the workflows to serve; default the coordinator's, else
            ``discover(settings.workflow_packages)``.
        coordinator: submits, reads and cancels runs; default one built from ``settings``.

    Returns:
        The FastAPI app.  While it is served (its lifespan), it holds an asyncio Redis
        client.  (Run-end callbacks are registered here and delivered by the workers.)

    Raises:
        DefinitionError: a workflow package cannot be imported or holds an invalid one.
    """
    if catalog is None:
        catalog = coordinator.catalog if coordinator else discover(
            settings.workflow_packages, limits=limits_of(settings))
    if coordinator is None:
        # a caller waits on every request: a store that does not answer is a 503 within
        # redis_timeout_s, not 15 s.  (Publishing keeps Celery's retries: the store is
        # always used first, and a blip between the two should not fail a submission.)
        store = RunStore.from_url(settings.redis_target, settings.key_prefix,
                                  settings.run_retention_s, timeout_s=settings.redis_timeout_s,
                                  broker=settings.broker_target)
        coordinator = Coordinator(settings, catalog, store=store)
    coord = coordinator
    registry = CallbackRegistry(coord.store.client, coord.store.keys, settings.run_retention_s)
    reader = AsyncRunReader(settings.redis_target, coord.store.keys,
                            connections=settings.api_redis_connections,
                            stream_connections=settings.api_stream_connections,
                            short_timeout_s=settings.redis_timeout_s)
    quotas = Quotas(settings)  # fair sharing between tokens (api/quotas.py)
    ctx = ApiContext(settings=settings, catalog=catalog, coordinator=coord, registry=registry,
                     reader=reader)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:  # a store of another schema: refuse to serve it
            await anyio.to_thread.run_sync(coord.store.check_schema)
        except StoreError as exc:
            log.warning("cannot check the run store's schema now (%s: %s): requests "
                        "answer 503 until Redis does", type(exc).__name__, exc)
        reader.open()
        quotas.open(reader)
        if not settings.api_tokens:
            log.warning("no API tokens configured (ORCH_API_TOKENS): every authenticated "
                        "endpoint answers 401")
        try:
            yield
        finally:
            await reader.close()

    # No unauthenticated documentation pages: the schema is served below, behind a token.
    app = FastAPI(title="celery-orchestrator", version="1", description=DESCRIPTION,
                  lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None,
                  default_response_class=JSONResponse,
                  dependencies=[Depends(known_query_only)])
    app.state.ctx = ctx
    app.state.tokens = TokenTable.of(settings.api_tokens)
    app.state.quotas = quotas
    failures.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(Admission)  # outermost: a caller over a limit costs no body read
    app.include_router(health.router)
    app.include_router(workflows.router)
    app.include_router(runs.router)
    app.router.routes.insert(0, PlainSubmitRoute())  # the hot path, ahead of FastAPI's
    app.include_router(waits.router)
    app.include_router(items.router)
    app.include_router(schedules.router)
    app.include_router(submissions.router)
    app.include_router(metrics_api.router)
    hooks.install(app, settings, catalog, coord)  # webhooks and trigger events
    web.install(app, settings)  # the web UI under /ui (docs/ui.md)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(_token: Annotated[ApiToken, Depends(any_token)]) -> dict[str, Any]:
        return app.openapi()

    build_schema = app.openapi

    def schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _throttled(_absent_is_not_null(build_schema()))
        return app.openapi_schema

    app.openapi = schema  # type: ignore[method-assign]
    return app


def _throttled(schema: dict[str, Any]) -> dict[str, Any]:
    """Document the 429 of the per-token rate limit (:class:`~orchestrator.api.quotas.
    Admission`, a middleware) on every operation that takes a token (those with a 401)."""
    (entry,) = error_responses(429).values()
    doc = {**entry, "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/ErrorBody"}}}}
    doc.pop("model")
    for item in schema.get("paths", {}).values():
        for op in item.values():
            responses = op.get("responses") if isinstance(op, dict) else None
            if isinstance(responses, dict) and "401" in responses:
                responses.setdefault("429", doc)
    return schema


def _absent_is_not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop ``null`` from optional parameters' schemas in the OpenAPI document.

    FastAPI documents ``x: T | None = None`` as ``anyOf: [T, null]``, but a query string
    or a header cannot carry a JSON null: an optional parameter is expressed by leaving
    it out.  (Clients and fuzzers would otherwise send the text ``null``.)
    """
    for item in schema.get("paths", {}).values():
        for op in item.values():
            for param in op.get("parameters", []) if isinstance(op, dict) else []:
                ps = param.get("schema", {})
                variants = ps.get("anyOf")
                if not isinstance(variants, list):
                    continue
                kept = [v for v in variants if v != {"type": "null"}]
                if len(kept) == 1 and len(kept) < len(variants):
                    ps.pop("anyOf")
                    if ps.get("default", ...) is None:
                        ps.pop("default")
                    ps.update(kept[0])
    return schema
