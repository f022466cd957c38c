"""Every error the API answers, in one body shape: ``{"error": {"code", "message", "fix"}}``.

Bad input is always a 4xx with a code a program can branch on and a fix a person can
follow; a 5xx means a fault on our side (or a store that cannot be reached: 503).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from kombu.exceptions import OperationalError as BrokerError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from orchestrator.api.models import ErrorBody, ErrorInfo
from orchestrator.api.responses import JSONResponse
from orchestrator.errors import (
    ApiError,
    DefinitionError,
    DispatchError,
    IdempotencyConflict,
    InputInvalid,
    OrchestratorError,
    ResumeRefused,
    RunDamaged,
    RunExists,
    RunInputTooLarge,
    RunNotFound,
    StoreUnavailable,
    Throttled,
    WorkflowNotFound,
)
from orchestrator.outages import explain_either, mask_url
from orchestrator.store import StoreError

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1
"""``Retry-After`` of a 503: Redis outages are usually short (a restart, a failover)."""

RETRY_AFTER_DOC = {"Retry-After": {"description": "Seconds to wait before retrying.",
                                   "schema": {"type": "integer"}}}
"""The OpenAPI ``headers`` entry of a 429 or 503."""

_DESCRIPTIONS = {
    400: "Malformed request (for example, a body that is not JSON).",
    401: "Missing or unknown bearer token.",
    403: "The token lacks the scope this endpoint needs.",
    404: "No such workflow or run.",
    409: "Conflict with the current state (run already ended; Idempotency-Key reused "
         "for a different request, or still in flight).",
    413: "Request body, or the run input in it, larger than the configured limit.",
    415: "Body is not application/json.",
    410: "The run's record is damaged (partial); it cannot be read.",
    422: "Invalid parameters or run input.",
    429: "Over a limit of the token (requests per window, open streams, waiting submits); "
         "retry after the Retry-After header's seconds.",
    503: "The store (Redis) or the broker cannot be reached; or (server_busy) the server "
         "holds as many streams and waits as it can: retry after Retry-After.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses, all with :class:`ErrorBody`
    (429 and 503 with their ``Retry-After`` header)."""
    return {c: {"model": ErrorBody, "description": _DESCRIPTIONS[c],
                **({"headers": RETRY_AFTER_DOC} if c in (429, 503) else {})} for c in codes}


def error_json(status: int, code: str, message: str, fix: str = "",
               details: list[dict[str, Any]] | None = None,
               headers: dict[str, str] | None = None) -> JSONResponse:
    """An error response in the one shape."""
    body = ErrorBody(error=ErrorInfo(code=code, message=message, fix=fix, details=details))
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=status,
                        headers=headers)


def store_unavailable(exc: StoreUnavailable) -> JSONResponse:
    """The 503 of a Redis failure: code ``store_unavailable`` with the kind in ``details``
    (``redis_unreachable``, ``redis_auth_failed``, ``redis_timeout``), one line naming the
    URL (password masked), the fix, and ``Retry-After``."""
    return error_json(503, StoreUnavailable.code, exc.summary, exc.fix,
                      details=[{"type": exc.code}],
                      headers={"Retry-After": str(RETRY_AFTER_S)})


def _api_error_headers(exc: ApiError) -> dict[str, str] | None:
    if exc.status_code == 401:
        return {"WWW-Authenticate": 'Bearer realm="orchestrator"'}
    if isinstance(exc, Throttled):
        return {"Retry-After": str(exc.retry_after_s)}
    if exc.code == "idempotency_in_progress":
        return {"Retry-After": "1"}
    return None


def orchestrator_error(exc: OrchestratorError) -> JSONResponse:
    """The response for an error of the orchestrator's tree."""
    text = str(exc)
    if isinstance(exc, StoreUnavailable):
        return store_unavailable(exc)
    if isinstance(exc, ApiError):
        return error_json(exc.status_code, exc.code, exc.message, exc.fix,
                          headers=_api_error_headers(exc))
    if isinstance(exc, WorkflowNotFound):
        return error_json(404, "workflow_not_found", text,
                          "GET /v1/workflows lists the workflows this server knows.")
    if isinstance(exc, RunNotFound):
        return error_json(404, "run_not_found", text,
                          "Check the run id; finished runs are kept for the retention only.")
    if isinstance(exc, RunDamaged):
        return error_json(410, "run_damaged", text,
                          "The run's record is partial; it cannot be read. Start a new run.")
    if isinstance(exc, RunInputTooLarge):
        return error_json(413, "input_too_large", text, "Pass larger data by reference "
                          "(e.g. an object-store URL in the input); the limit is the "
                          "server's ORCH_RUN_INPUT_MAX_BYTES.")
    if isinstance(exc, InputInvalid):
        return error_json(422, "input_invalid", text, "GET /v1/workflows/{name} shows the "
                          "input_schema the body must match.")
    if isinstance(exc, ResumeRefused):
        message, _, fix = text.partition(" Fix: ")
        return error_json(409, "resume_refused", message, fix or "Read the run first.")
    if isinstance(exc, IdempotencyConflict):
        return error_json(409, "idempotency_conflict", text,
                          "Use a new Idempotency-Key for a different request.")
    if isinstance(exc, RunExists):
        return error_json(409, "run_exists", text, "Read the run, or use another id.")
    if isinstance(exc, DispatchError):
        return error_json(503, "dispatch_unavailable", text, "Start the workers or the broker "
                          "the message names, then retry.")
    if isinstance(exc, DefinitionError):
        log.error("workflow definition error while serving a request: %s", exc)
        return error_json(500, "definition_error", text,
                          "The server's workflow catalog is broken; tell its operator.")
    log.error("unexpected orchestrator error: %r", exc)
    return error_json(500, "internal_error", text, "Retry later; tell the operator if it "
                      "persists.")


def _allowed(request: Request) -> list[str]:
    """Every method some route serves at the request's path (routes may be nested
    routers, so each method is matched as a request, not read off the routes)."""
    methods = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            methods.append(method)
    return methods


def install(app: FastAPI) -> None:
    """Register the exception handlers that give every error the one shape."""

    def redis_failure(request: Request, exc: Exception) -> StoreUnavailable | None:
        settings = request.app.state.ctx.settings
        return explain_either(exc, settings.redis_url, settings.broker_url,
                              settings.redis_timeout_s)

    async def on_orchestrator_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, OrchestratorError)
        if isinstance(exc, DispatchError) and not isinstance(exc, StoreUnavailable):
            err = redis_failure(request, exc)  # e.g. queue depths, wrapping the broker's
            if err is not None:
                exc = err
        return orchestrator_error(exc)

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        details: list[dict[str, Any]] = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
             "type": str(e.get("type", ""))} for e in exc.errors()]
        where = "; ".join(f"{'.'.join(d['loc'])}: {d['msg']}" for d in details)
        return error_json(422, "invalid_request", f"invalid request: {where}",
                          "Fix the parameters listed in details (see the OpenAPI schema "
                          "at /openapi.json).", details=details)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        codes = {400: "malformed_json", 404: "not_found", 405: "method_not_allowed"}
        fixes = {400: "Send one JSON document (UTF-8) as the body.",
                 404: "See /openapi.json for the endpoints.",
                 405: "Use a method the Allow header lists."}
        headers = dict(exc.headers) if exc.headers else {}
        if exc.status_code == 405:  # Starlette names the first matching route's methods
            headers["Allow"] = ", ".join(_allowed(request))
        return error_json(exc.status_code, codes.get(exc.status_code, "http_error"),
                          str(exc.detail), fixes.get(exc.status_code, ""),
                          headers=headers or None)

    async def on_redis_error(request: Request, exc: Exception) -> JSONResponse:
        err = redis_failure(request, exc)
        if err is None:  # a command Redis refused (OOM, READONLY...): still Redis's state
            url = mask_url(request.app.state.ctx.settings.redis_url)
            err = StoreUnavailable(url, " ".join(str(exc).split()) or type(exc).__name__)
        log.warning("%s", err.summary)
        return store_unavailable(err)

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_json(500, "internal_error", "internal error",
                          "Retry later; tell the operator if it persists.")

    app.add_exception_handler(OrchestratorError, on_orchestrator_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(StoreError, on_redis_error)
    app.add_exception_handler(BrokerError, on_redis_error)
    app.add_exception_handler(Exception, on_unexpected)
