"""The one exception tree of the orchestrator.

Families are grouped by who must react:

* :class:`DefinitionError` — the author of a workflow must change its definition.
* :class:`RunError` — the caller of a run (bad input, unknown run, illegal transition).
* :class:`DispatchError` — the operator (no worker for a queue, broker unreachable).
* :class:`StepControl` — raised by a step function to steer its own step run
  (:class:`RetryLater`, :class:`SkipStep`, :class:`FailPermanently`).

Every error carries a message that names the fix.  Errors that cross the wire are stored
as data (type, message, traceback) by :func:`error_data`.
"""

from __future__ import annotations

import traceback as _traceback
from dataclasses import dataclass
from typing import Any


class OrchestratorError(Exception):
    """Root of every error raised by the orchestrator."""


class SettingsInvalid(OrchestratorError):
    """A setting (an ``ORCH_*`` variable) has an invalid value: the operator must fix it."""


# --- definition errors ---------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a workflow definition.

    Attributes:
        code: stable machine-readable code, e.g. ``cycle`` or ``unknown_step``.
        message: what is wrong.
        fix: what to change.
        workflow: the workflow's name.
        step: the step the problem is in, if any.
    """

    code: str
    message: str
    fix: str
    workflow: str = ""
    step: str | None = None

    def __str__(self) -> str:
        where = f"workflow {self.workflow!r}" if self.workflow else "workflow"
        if self.step:
            where += f", step {self.step!r}"
        return f"{where}: {self.message} Fix: {self.fix}"


class DefinitionError(OrchestratorError):
    """A workflow definition is invalid: its author must change it."""


class WorkflowInvalid(DefinitionError):
    """A workflow failed validation; ``problems`` lists every problem found at once."""

    def __init__(self, workflow: str, problems: list[Problem]) -> None:
        self.workflow = workflow
        self.problems = tuple(problems)
        lines = "\n".join(f"  - [{p.code}] {p}" for p in problems)
        super().__init__(f"workflow {workflow!r} has {len(problems)} problem(s):\n{lines}")

    def codes(self) -> set[str]:
        """Return the set of problem codes, handy for tests and API bodies."""
        return {p.code for p in self.problems}


class WorkflowNotFound(DefinitionError):
    """No workflow of that name or path is known."""


class VersionNotFound(WorkflowNotFound):
    """No stored version of that workflow has that content hash."""


class ConditionError(DefinitionError):
    """A ``when`` condition does not parse or evaluate; ``column`` is 1-based (0: unknown)."""

    def __init__(self, expression: str, reason: str, column: int = 0) -> None:
        self.expression = expression
        self.reason = reason
        self.column = column
        at = f" at column {column}" if column else ""
        super().__init__(f"condition {expression!r}{at}: {reason}")


class TriggerInvalid(DefinitionError):
    """An event trigger failed validation; ``problems`` lists every problem found at once
    (a bad CEL expression, an unknown source or workflow, a missing secret setting)."""

    def __init__(self, trigger: str, problems: list[Problem]) -> None:
        self.trigger = trigger
        self.problems = tuple(problems)
        lines = "\n".join(f"  - [{p.code}] {p.message} Fix: {p.fix}" for p in problems)
        super().__init__(f"trigger {trigger!r} has {len(problems)} problem(s):\n{lines}")

    def codes(self) -> set[str]:
        """Return the set of problem codes, handy for tests and API bodies."""
        return {p.code for p in self.problems}


class TriggerNotFound(DefinitionError):
    """No event trigger of that name is cataloged."""


class ScheduleInvalid(DefinitionError):
    """A schedule is invalid (its fields, zone, cron expression or ``input_expr``); the
    message names every problem and its fix."""


class ScheduleNotFound(DefinitionError):
    """No schedule of that id is in the store."""


class ScheduleConflict(DefinitionError):
    """A schedule cannot be changed as asked: its id is taken (add it with replace), or it
    is declared beside its workflow (change it there)."""


# --- run errors ------------------------------------------------------------------------


class RunError(OrchestratorError):
    """A run cannot be started or changed as asked: its caller must react."""


class InputInvalid(RunError):
    """A run's input does not match the workflow's input schema."""


class RunInputTooLarge(InputInvalid):
    """A run's input is larger, as JSON, than ``Settings.run_input_max_bytes``: larger
    data goes by reference (an object-store URL in the input, not the data)."""


class StepOutputTooLarge(RunError):
    """A step's output is larger, as JSON, than ``Settings.step_output_max_bytes``: the
    step run fails without retry; the step should return a reference to its data."""


class RunIdInvalid(RunError):
    """A caller's run id is empty or has characters run ids may not have."""


class RunNotFound(RunError):
    """No run with that id is in the store (never created, or expired by retention)."""


class StepNotFound(RunNotFound):
    """The run has no such step (or no such map step, asking for a map's items); a
    ``RunNotFound`` to callers that only tell found from not found."""


class RunDamaged(RunError):
    """A run's record in the store is partial or malformed (written by a straggler after
    its keys expired, or by another program); it cannot be read as a run."""


class RunExists(RunError):
    """A run with the requested id already exists (an idempotent submission repeated)."""


class ResumeRefused(RunError):
    """A run cannot be resumed as asked (still running, unknown step, changed steps)."""


class IdempotencyConflict(RunError):
    """An ``Idempotency-Key`` was reused for a different request (or one still in flight)."""


class EventInvalid(RunError):
    """An event cannot become a run: its body is not JSON, its trigger's filter, input
    mapping or event-id expression fails on it, or the mapped input does not match the
    workflow's schema.  Retrying the same event cannot help (a *poison* event)."""


# --- dispatch errors -------------------------------------------------------------------


class DispatchError(OrchestratorError):
    """Work cannot reach a worker: the operator must react."""


class StoreIncompatible(DispatchError):
    """The run store is one this release cannot use (another schema, a Redis Cluster): the
    operator must change the deployment.  Nothing was changed.  The CLI exits 6 on it, a
    worker stops with exit code 6 before taking a task, and the API does not start."""


class StoreIsCluster(StoreIncompatible):
    """The Redis at the store's URL is a Redis Cluster node but ``ORCH_REDIS_CLUSTER`` is
    not set (a standalone store's keys spread over many slots), or the broker's URL is one
    (kombu's Redis transport does not speak Cluster): refused before anything is written.

    Attributes:
        url: the Redis URL, password masked.  variable: the setting that names it.
    """

    def __init__(self, url: str, variable: str = "ORCH_REDIS_URL") -> None:
        self.url, self.variable = url, variable
        super().__init__(
            f"Redis at {url} is a Redis Cluster node (cluster_enabled:1); "
            + ("the broker needs one Redis server, or a Sentinel group"
               if variable == "ORCH_BROKER_URL" else
               "the run store uses a cluster only with ORCH_REDIS_CLUSTER set")
            + f", and nothing was changed. Fix: {self.fix_for(variable)}")

    @staticmethod
    def fix_for(variable: str) -> str:
        """The fix, naming the setting ``variable``."""
        if variable == "ORCH_BROKER_URL":
            return (f"point {variable} at a standalone Redis (with a replica and Sentinels "
                    "for failover: docs/operations.md); kombu's Redis transport cannot "
                    "use a Redis Cluster (docs/scaling.md, 'Redis Cluster').")
        return (f"point {variable} at a standalone Redis (with a replica and Sentinels "
                "for failover: docs/operations.md), or keep the run store on the cluster "
                "with ORCH_REDIS_CLUSTER=true and ORCH_BROKER_URL on a standalone Redis "
                "(docs/scaling.md, 'Redis Cluster').")


class StoreNotCluster(StoreIncompatible):
    """``ORCH_REDIS_CLUSTER`` is set, but the Redis at the store's URL is not a Redis
    Cluster node (``cluster_enabled:0``): nothing was written.

    Attributes:
        url: the Redis URL, password masked.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__(
            f"ORCH_REDIS_CLUSTER is set, but Redis at {url} is not a Redis Cluster node "
            "(cluster_enabled:0), and nothing was changed. Fix: unset ORCH_REDIS_CLUSTER "
            "for a standalone Redis, or point ORCH_REDIS_URL at a node of the cluster.")


class StoreSchemaMismatch(StoreIncompatible):
    """The run store was written in a schema this release cannot read (or write): the
    operator must run a release that can, or migrate the store.  Nothing was changed.

    Attributes:
        found: the store's schema version.  wanted: this release's.
        written_by: the release that set the store's schema version.
    """

    def __init__(self, url: str, found: int, wanted: int, written_by: str, release: str
                 ) -> None:
        self.found, self.wanted, self.written_by = found, wanted, written_by
        if found > wanted:
            fix = (f"run celery-orchestrator {written_by} or newer here (a rollback must "
                   f"stay on a release that reads schema {found}; see docs/operations.md, "
                   "Upgrades)")
        else:
            fix = (f"run celery-orchestrator {written_by} here: this release ships no "
                   f"migration from schema {found} (see docs/operations.md, Upgrades)")
        super().__init__(
            f"the run store at {url} has schema version {found} (set by celery-orchestrator "
            f"{written_by}); this release ({release}) uses schema {wanted} and stopped "
            f"before changing anything. Fix: {fix}")


class StoreUnavailable(DispatchError):
    """Redis (broker, result backend and run store) cannot be used: the operator must react.

    The message is one line: the URL (password masked), what went wrong, and the fix.
    :func:`orchestrator.outages.explain` makes these from what redis-py or kombu raised.

    Attributes:
        code: the machine-readable kind, also the API's error code.
        url: the Redis URL, password masked.
        detail: what the client library said.
        fix: what the operator should do.
    """

    code = "store_unavailable"
    fix = "Check that Redis runs and that ORCH_REDIS_URL points at it."

    def __init__(self, url: str, detail: str, timeout_s: float | None = None,
                 variable: str = "ORCH_REDIS_URL") -> None:
        self.url = url
        self.detail = detail
        self.timeout_s = timeout_s
        if variable != "ORCH_REDIS_URL":  # the broker's Redis (ORCH_BROKER_URL)
            self.fix = self.fix.replace("ORCH_REDIS_SENTINEL_MASTER",
                                        variable.replace("_URL", "_SENTINEL_MASTER"))
            self.fix = self.fix.replace("ORCH_REDIS_URL", variable)
        super().__init__(f"{self.summary}. Fix: {self.fix}")

    @property
    def summary(self) -> str:
        """What went wrong, without the fix: ``Redis at <url> is unreachable (<detail>)``."""
        return f"{self._what()} ({self.detail})"

    def _what(self) -> str:
        return f"Redis at {self.url} cannot be used"


class RedisUnreachable(StoreUnavailable):
    """Nothing accepts connections at the Redis URL (refused, unknown host, no route)."""

    code = "redis_unreachable"
    fix = ("start Redis there (`orchestrator up` starts a local one), or point "
           "ORCH_REDIS_URL at a running server.")
    sentinel_fix = ("check that the Sentinels of ORCH_REDIS_URL run and that the group "
                    "ORCH_REDIS_SENTINEL_MASTER names has a master (`redis-cli -p 26379 "
                    "SENTINEL get-master-addr-by-name <name>` on a Sentinel).")
    """The fix when the URL names Sentinels (no Sentinel answered, or none knows a master)."""

    def __init__(self, url: str, detail: str, timeout_s: float | None = None,
                 variable: str = "ORCH_REDIS_URL") -> None:
        if url.startswith("sentinel://"):
            self.fix = self.sentinel_fix
        super().__init__(url, detail, timeout_s, variable)

    def _what(self) -> str:
        return f"Redis at {self.url} is unreachable"


class RedisAuthFailed(StoreUnavailable):
    """Redis refused the password (``NOAUTH``: none given; ``WRONGPASS``: a wrong one)."""

    code = "redis_auth_failed"
    fix = ("put the server's password in ORCH_REDIS_URL, as "
           "redis://:PASSWORD@host:port/db (or redis://USER:PASSWORD@... with ACL users).")

    def _what(self) -> str:
        return f"Redis at {self.url} refused the password"


class RedisTimedOut(StoreUnavailable):
    """Redis accepted the connection but did not answer in time."""

    code = "redis_timeout"
    fix = ("check that ORCH_REDIS_URL points at a Redis server (not another service) "
           "and that the server is not stalled or overloaded.")

    def _what(self) -> str:
        within = f" within {self.timeout_s:g} s" if self.timeout_s else " in time"
        return f"Redis at {self.url} did not answer{within}"


# --- API client errors -----------------------------------------------------------------


class ApiError(OrchestratorError):
    """The HTTP API refused a call (or could not be reached): its caller must react.

    Attributes:
        status_code: the HTTP status (0 when no answer arrived).
        code: the machine-readable code of the API's error body, e.g. ``input_invalid``.
        message: what is wrong, as the API said.
        fix: what to change, as the API said.
    """

    def __init__(self, status_code: int, code: str, message: str, fix: str = "") -> None:
        self.status_code = status_code
        self.code = code
        self.message = message
        self.fix = fix
        super().__init__(f"{status_code} {code}: {message}" + (f" Fix: {fix}" if fix else ""))


class Throttled(ApiError):
    """The API refused a call for now (429, or 503 ``server_busy``): the caller is over a
    limit of its token or the server is full; it may retry after ``retry_after_s``.

    Attributes:
        retry_after_s: whole seconds to wait before retrying (the ``Retry-After`` header).
    """

    def __init__(self, status_code: int, code: str, message: str, fix: str,
                 retry_after_s: int) -> None:
        self.retry_after_s = max(1, retry_after_s)
        super().__init__(status_code, code, message, fix)


# --- step control flow -----------------------------------------------------------------


class StepControl(OrchestratorError):
    """Raised by a step function to steer its own step run."""


class RetryLater(StepControl):
    """Retry this step run after ``delay_s`` (or the retry policy's backoff if ``None``)."""

    def __init__(self, reason: str = "", delay_s: float | None = None) -> None:
        self.delay_s = delay_s
        super().__init__(reason or "step asked to be retried")


class SkipStep(StepControl):
    """Mark this step run as skipped, with ``reason`` recorded."""


class FailPermanently(StepControl):
    """Fail this step run now, without further retries."""


def error_data(exc: BaseException) -> dict[str, Any]:
    """Return ``exc`` as JSON-ready data: ``{"type", "message", "traceback"}``."""
    return {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc),
        "traceback": "".join(_traceback.format_exception(exc)),
    }
