"""The plain submit, ``POST /v1/workflows/{name}/runs`` with no query parameters and no
``Idempotency-Key``, served by a Starlette route in front of FastAPI's.

Why: the plain submit is the API's hot path (services enqueue runs with it), and for it
FastAPI's per-request machinery, solving the route's dependencies and validating its five
optional parameters, was a measured share of the API's CPU per submit: served here, a
submit took 1.21 ms of the API's CPU against 1.46 (medians of eight runs of
``python -m bench.api --worker-concurrency 0``, alternating; ``docs/benchmarks.md``).
This route does the same checks and
then the same work: the same token check (:func:`~orchestrator.api.auth.authorize`, scope
``runs:write``) and :func:`orchestrator.api.runs.start_run` with every parameter at
its default.  Everything else about a request is as for any route: the middlewares (rate
limit, admission, body limit) run before it, and an error raised in it is answered by
the app's exception handlers, in the one error shape.

Any other request to that path (a query string, an ``Idempotency-Key``, a workflow name
the route's pattern refuses, another method) does not match here and goes on to FastAPI's
route, which documents the endpoint in the OpenAPI schema and answers it.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from orchestrator.api import runs
from orchestrator.api.auth import bearer, write_runs
from orchestrator.api.deps import ApiContext
from orchestrator.api.models import API_PREFIX, IDEMPOTENCY_HEADER
from orchestrator.core.models import WORKFLOW_NAME
from orchestrator.core.priorities import Priority

PATH = API_PREFIX + runs.SUBMIT_PATH
_NAME = re.compile(WORKFLOW_NAME)
_IDEMPOTENCY = IDEMPOTENCY_HEADER.lower().encode()


async def plain_submit(request: Request) -> Response:
    """Start a run of ``name`` with the JSON body as its input: :func:`runs.submit_run`
    with no ``wait``, ``callback_url``, ``version``, ``priority`` or idempotency key."""
    token = await write_runs(request, await bearer(request))
    ctx: ApiContext = request.app.state.ctx
    return await runs.start_run(request, request.path_params["name"], ctx, token,
                                None, None, None, Priority.NORMAL, None)


class PlainSubmitRoute(Route):
    """Matches only the plain submit (see the module's docstring); every other request
    is left to the routes after it."""

    def __init__(self) -> None:
        super().__init__(PATH, plain_submit, methods=["POST"], include_in_schema=False)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["query_string"]:
            return Match.NONE, {}
        for key, _ in scope["headers"]:
            if key == _IDEMPOTENCY:
                return Match.NONE, {}
        match, child = super().matches(scope)
        if match is not Match.FULL:
            return Match.NONE, {}
        name = child["path_params"]["name"]
        # as FastAPI's check of runs.WorkflowName (fullmatch: a `$` of re.search would
        # let a name end in a newline through)
        if len(name) > runs.WORKFLOW_NAME_MAX or _NAME.fullmatch(name) is None:
            return Match.NONE, {}
        return match, child
