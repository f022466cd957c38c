"""Liveness and readiness probes: no authentication, no secrets in the answers."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends

from orchestrator.api.deps import ApiContext, context
from orchestrator.api.failures import error_responses, store_unavailable
from orchestrator.api.models import Health
from orchestrator.api.responses import JSONResponse
from orchestrator.errors import RedisTimedOut, StoreUnavailable
from orchestrator.outages import explain, mask_url
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
    """Redis (store and broker) answers a PING within a second; else 503 naming the URL
    (password masked), what went wrong and the fix.  A broker on another Redis
    (``ORCH_BROKER_URL``) is pinged too."""
    checks = [(ctx.settings.redis_url, "ORCH_REDIS_URL", ctx.reader.ping)]
    store = ctx.coordinator.store
    if store.broker_apart:
        checks.append((ctx.settings.broker_url, "ORCH_BROKER_URL",
                       lambda: anyio.to_thread.run_sync(store.broker_client.ping)))
    for url, variable, ping in checks:
        try:
            with anyio.fail_after(READY_TIMEOUT_S):
                await ping()
        except TimeoutError:
            return store_unavailable(RedisTimedOut(mask_url(url), "no answer to PING",
                                                   READY_TIMEOUT_S, variable))
        except (StoreError, OSError) as exc:
            err = explain(exc, url, READY_TIMEOUT_S, variable) or StoreUnavailable(
                mask_url(url), " ".join(str(exc).split()) or type(exc).__name__,
                variable=variable)
            return store_unavailable(err)
    return Health(status="ready", checks={"redis": "ok"} | (
        {"broker": "ok"} if store.broker_apart else {}))
