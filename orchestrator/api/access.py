"""What a token sees of runs: its own tenant's only (every tenant's with ``admin``), and
how much of each (:data:`~orchestrator.api.models.RunDetail`).

A run of another tenant answers exactly as a run that does not exist (404
``run_not_found``, the same message), never 403, which would confirm that it exists.
"""

from __future__ import annotations

import anyio

from orchestrator.api.deps import ApiContext
from orchestrator.api.models import RunDetail, RunOut
from orchestrator.core.tenants import sees
from orchestrator.settings import ApiScope, ApiToken


def tenant_filter(scopes: frozenset[ApiScope], tenant: str) -> str | None:
    """The tenant whose things a holder of ``scopes`` sees; None: every tenant's."""
    return None if "admin" in scopes else tenant


def viewer_tenant(token: ApiToken) -> str | None:
    """The tenant whose things ``token`` sees; None (``admin``): every tenant's."""
    return tenant_filter(token.scopes, token.tenant)


def detail_for(scopes: frozenset[ApiScope]) -> RunDetail:
    """How much of a run a holder of ``scopes`` sees."""
    if "runs:read" not in scopes:
        return "status"
    return "debug" if "runs:tracebacks" in scopes else "full"


def detail_of(token: ApiToken) -> RunDetail:
    """How much of a run ``token`` sees."""
    return detail_for(token.scopes)


def check_run(ctx: ApiContext, viewer: str | None, run_id: str) -> str:
    """Return the run's workflow version if a viewer of tenant ``viewer`` may see the run
    (sync: a worker thread).

    Raises:
        RunNotFound: no such run, or it is another tenant's (the same error).
    """
    store = ctx.coordinator.store
    owner = store.owner(run_id)
    if owner is None or not sees(viewer, owner[0]):
        raise store.missing(run_id)
    return owner[1]


async def acheck_run(ctx: ApiContext, viewer: str | None, run_id: str) -> None:
    """:func:`check_run` from the event loop."""
    await anyio.to_thread.run_sync(check_run, ctx, viewer, run_id)


def view(ctx: ApiContext, token: ApiToken, run_id: str) -> RunOut:
    """The run as ``token`` sees it (sync: a worker thread).

    Raises:
        RunNotFound: no such run, or another tenant's.  RunDamaged: as
            ``Coordinator.view``.
    """
    version = check_run(ctx, viewer_tenant(token), run_id)
    # the version read with the tenant: the view is then one more round trip, not four
    return RunOut.from_view(ctx.coordinator.view(run_id, version or None)).shaped(
        detail_of(token))


def own_view(ctx: ApiContext, token: ApiToken, run_id: str,
             version: str | None = None) -> RunOut:
    """The run as ``token`` sees it, for a run that a request with ``token`` has just
    created (sync: a worker thread): the run is of the token's tenant, so no tenant check
    (one store read fewer on the submit path).  ``version``: the version it was created
    with (the reads then take one round trip, see ``Coordinator.view``).

    Raises:
        RunNotFound: no such run.  RunDamaged: as ``Coordinator.view``.
    """
    return RunOut.from_view(ctx.coordinator.view(run_id, version)).shaped(detail_of(token))
