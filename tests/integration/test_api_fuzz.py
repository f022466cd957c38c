"""The HTTP API fuzzed from its OpenAPI schema (schemathesis), on a real server with real
workers: every endpoint with a token of each scope alone and with one of every scope,
then stateful sequences that follow links (a run submitted, then read, followed,
cancelled, resumed, approved; a schedule added, then read, paused, replaced, deleted).

No 5xx, and every status, header and body as the published schema says.  The budget is
bounded (``EXAMPLES``, ``SCENARIOS``): a quick check in CI, not an exhaustive search.
"""

from __future__ import annotations

import copy
import secrets
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis.errors import FlakyStrategyDefinition

from orchestrator.api.app import create_api
from orchestrator.api.server import ServerThread
from orchestrator.settings import API_SCOPES
from tests.support.api import api_server_fixture, api_settings, bearer

# schemathesis makes one item per operation, all with one node id: pytest-xdist would run
# one of them, so scripts/test.sh runs this file in its single-process pass
pytestmark = [pytest.mark.redis, pytest.mark.serial]

EXAMPLES = 4
"""Cases generated per endpoint; each is sent once with every token."""
SCENARIOS = 25
"""Stateful scenarios (each a few linked calls)."""
FLAKY_RESTARTS = 8
"""New starts of the stateful run after hypothesis' FlakyStrategyDefinition (see the test)."""

# Fresh secrets for this module: nothing here is a real credential.
SCOPE_TOKENS = {scope: secrets.token_urlsafe(24) for scope in API_SCOPES}
ALL_TOKEN = secrets.token_urlsafe(24)
TOKENS = [{"token": t, "scopes": [s], "name": s} for s, t in SCOPE_TOKENS.items()] + [
    {"token": ALL_TOKEN, "scopes": list(API_SCOPES), "name": "all"}]
EVERY_TOKEN = [ALL_TOKEN, *SCOPE_TOKENS.values()]

# No callback secret: fuzzed callback URLs are refused (422), so no request ever leaves
# for an address the fuzzer made up.
fuzz_api = api_server_fixture(callback_secret="", api_tokens=TOKENS)

_RUN = "$response.body#/run_id"
_SCHEDULE = "$response.body#/id"
_LINKS: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {
    ("/v1/workflows", "get", "200"): {
        "Workflow": {"operationId": "get_workflow", "parameters": {
            "name": "$response.body#/workflows/0/name"}},
        # the first is approval_flow (tests/integration/flows.py): any object is its input
        "Submit": {"operationId": "submit_run", "parameters": {
            "name": "$response.body#/workflows/0/name"}},
    },
    **{("/v1/workflows/{name}/runs", "post", status): {
        "Run": {"operationId": "get_run", "parameters": {"run_id": _RUN}},
        "Cancel": {"operationId": "cancel_run", "parameters": {"run_id": _RUN}},
        "Resume": {"operationId": "resume_run", "parameters": {"run_id": _RUN}},
        "Events": {"operationId": "run_events", "parameters": {"run_id": _RUN}},
        "Approve": {"operationId": "approve_step",
                    "parameters": {"run_id": _RUN, "step": "approve"}},
        "Reject": {"operationId": "reject_step",
                   "parameters": {"run_id": _RUN, "step": "approve"}},
    } for status in ("200", "201", "202")},
    ("/v1/runs/{run_id}/cancel", "post", "200"): {
        "Resume": {"operationId": "resume_run", "parameters": {"run_id": _RUN}},
    },
    ("/v1/schedules", "post", "201"): {
        "Schedule": {"operationId": "get_schedule", "parameters": {"schedule_id": _SCHEDULE}},
        "Pause": {"operationId": "pause_schedule", "parameters": {"schedule_id": _SCHEDULE}},
        "ResumeSchedule": {"operationId": "resume_schedule",
                           "parameters": {"schedule_id": _SCHEDULE}},
        "Replace": {"operationId": "put_schedule", "parameters": {"schedule_id": _SCHEDULE}},
        "Delete": {"operationId": "delete_schedule",
                   "parameters": {"schedule_id": _SCHEDULE}},
    },
}
"""OpenAPI links between operations (by the route function's name), for the stateful
phase: where a response's id goes in the next request."""


def _schema() -> dict[str, Any]:
    """The API's schema (it depends on the code only: built from an app never served),
    with :data:`_LINKS` added where their operations exist."""
    schema = copy.deepcopy(create_api(api_settings("redis://127.0.0.1:9/0")).openapi())
    ids: dict[str, str] = {}
    for ops in schema["paths"].values():
        for op in ops.values():
            op_id = op.get("operationId", "")
            short = next((f for f in _function_names() if op_id.startswith(f + "_")), None)
            if short:
                ids[short] = op_id
    for (path, method, status), links in _LINKS.items():
        response = schema["paths"].get(path, {}).get(method, {}).get("responses", {}).get(
            status)
        if response is None:
            continue
        response["links"] = {
            name: {**link, "operationId": ids[link["operationId"]]}
            for name, link in links.items() if link["operationId"] in ids}
    return schema


def _function_names() -> list[str]:
    names = {link["operationId"] for links in _LINKS.values() for link in links.values()}
    return sorted(names, key=len, reverse=True)  # "resume_run" before "run"


openapi = schemathesis.openapi.from_dict(_schema(), config=schemathesis.Config.from_dict({
    "generation": {"max-examples": EXAMPLES},
    # the coverage phase sends every boundary case of every parameter: minutes, not seconds
    "phases": {"coverage": {"enabled": False},
               # only the links below: inferred ones would crowd them out of a short run
               "stateful": {"inference": {"algorithms": []}}},
    # rules the schema cannot state, checked by the server (422 naming the rule): a
    # schedule's cron xor every_s and its IANA zone, an event key's printable characters,
    # a run input against its workflow's own input_schema
    "operations": [{"include-path": path, "include-method": method, "checks": {
        "positive_data_acceptance": {"expected-statuses": [
            "2xx", "3xx", "401", "403", "404", "409", "422", "429"]}}}
        for path, method in (("/v1/schedules", "POST"), ("/v1/schedules/{schedule_id}", "PUT"),
                             ("/v1/events/{key}", "POST"),
                             ("/v1/workflows/{name}/runs", "POST"),
                             ("/v1/runs/{run_id}/resume", "POST"))],
}))


@openapi.parametrize()
@hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None,
                     phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_every_endpoint_with_every_scope(case: schemathesis.Case[Any],
                                         fuzz_api: ServerThread) -> None:
    """Each generated request is sent with the all-scopes token, then with a token of
    each scope alone: no 5xx, and a response the schema documents (a 403 for the scopes
    the endpoint does not take)."""
    for token in EVERY_TOKEN:
        case.call_and_validate(base_url=fuzz_api.url, headers=bearer(token), timeout=30)


def test_linked_calls_never_fail_on_the_server(fuzz_api: ServerThread) -> None:
    """Stateful: sequences of calls along the links, with the all-scopes token."""
    ran = [0]

    class Linked(openapi.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: schemathesis.Case[Any]) -> dict[str, Any]:
            return {"base_url": fuzz_api.url, "headers": bearer(ALL_TOKEN), "timeout": 30}

        def teardown(self) -> None:
            ran[0] += 1
            super().teardown()

    assert any("links" in r for ops in _schema()["paths"].values() for op in ops.values()
               for r in op.get("responses", {}).values()), "no link was added"
    # no shrinking: a sequence's draws depend on the server's answers (the links feed one
    # call's response into the next call), so hypothesis' replay of a failing sequence
    # draws differently and reports FlakyStrategyDefinition instead of the failure itself
    # (seen once in eight local runs); the failing sequence is reported as it was found.
    # Generation alone meets the same inconsistency (a sequence that follows an earlier
    # one's draws gets other answers: a cancel that finds its run ended, a wait that ends
    # in time; more often on a loaded machine, three runs in a row once in CI): that is
    # hypothesis' bookkeeping, not a server failure (those raise the checks' own errors),
    # so the run goes on with a new seed for the scenarios not run yet, and only a
    # generator that keeps failing so fails the test
    for attempt in range(1, FLAKY_RESTARTS + 2):
        try:
            Linked.run(settings=hypothesis.settings(
                max_examples=max(1, SCENARIOS - ran[0]), stateful_step_count=6,
                deadline=None, database=None, phases=[hypothesis.Phase.generate],
                suppress_health_check=list(hypothesis.HealthCheck)))
            return
        except FlakyStrategyDefinition:
            if ran[0] >= SCENARIOS:
                return  # every scenario ran: the last one's bookkeeping is all that failed
            if attempt > FLAKY_RESTARTS:
                raise
