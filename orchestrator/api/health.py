"""Liveness and readiness probes: no authentication, no secrets in the answers."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from orchestrator.api.deps import ApiContext, context
from orchestrator.api.failures import error_json, error_responses
from orchestrator.api.models import Health
from orchestrator.store import StoreError

router = APIRouter(tags=["health"])

READY_TIMEOUT_S = 1.0


@router.get("/healthz", response_model=Health, summary="Liveness")
def healthz() -> Health:
    """The process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, summary="Readiness",
            responses=error_responses(503))
async def readyz(ctx: Annotated[ApiContext, Depends(context)]) -> Health | JSONResponse:
    """Redis (store and broker) answers a PING within a second; else 503."""
    try:
        with anyio.fail_after(READY_TIMEOUT_S):
            await ctx.reader.ping()
    except (StoreError, OSError, TimeoutError) as exc:
        return error_json(503, "store_unavailable", f"Redis does not answer: "
                          f"{type(exc).__name__}", "Check that Redis runs and that "
                          "ORCH_REDIS_URL points at it.", headers={"Retry-After": "1"})
    return Health(status="ready", checks={"redis": "ok"})
