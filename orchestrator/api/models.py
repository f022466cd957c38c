"""The HTTP API's wire models, shared by the server (:mod:`orchestrator.api`) and the
Python client (:mod:`orchestrator.client`).

Plain pydantic models with no FastAPI import, so the client installs and imports without
the server's dependencies.  Responses ignore unknown fields rather than forbid them: an
older client keeps working against a newer server that adds fields.  Times are Unix
time in seconds (floats), as in the run store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from orchestrator.core.origin import Origin
from orchestrator.core.priorities import Priority
from orchestrator.core.states import RunStatus, StepStatus
from orchestrator.store.fields import EVENT_STEP, Event

if TYPE_CHECKING:
    from orchestrator.core.models import WorkflowDef
    from orchestrator.runtime.coordinator import RunView

API_PREFIX = "/v1"
SIGNATURE_HEADER = "X-Orchestrator-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"


RunDetail = Literal["status", "full", "debug"]
"""How much of a run a caller sees (:meth:`RunOut.shaped`): ids and statuses only
(``runs:write`` without ``runs:read``), everything but tracebacks (``runs:read``), or
everything (``runs:read`` and ``runs:tracebacks``)."""


class WireModel(BaseModel):
    """Base of the response models: immutable, tolerant of fields added later."""

    model_config = ConfigDict(frozen=True, extra="ignore")


# --- errors ----------------------------------------------------------------------------


class ErrorInfo(WireModel):
    """What went wrong, for a program (``code``) and for a person (``message``, ``fix``)."""

    code: str = Field(description="Stable machine-readable code, e.g. `input_invalid`.")
    message: str = Field(description="What is wrong.")
    fix: str = Field("", description="What to change.")
    details: list[dict[str, JsonValue]] | None = Field(
        None, description="Per-field problems, for request validation errors; for a 503, "
        "the kind of Redis failure (`type`: `redis_unreachable`, `redis_auth_failed`, "
        "`redis_timeout`).")


class ErrorBody(WireModel):
    """The one shape of every 4xx and 5xx answer."""

    error: ErrorInfo


# --- runs ------------------------------------------------------------------------------


class StepError(WireModel):
    """A step run's failure, as stored: the exception's type, message and traceback."""

    type: str = ""
    message: str = ""
    traceback: str | None = None


class StepRunOut(WireModel):
    """One step of a run: where it is, how many attempts it took, how long, what failed."""

    step_id: str
    status: StepStatus
    attempt: int = Field(0, description="Attempts started so far (0: never started).")
    queued_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    duration_s: float | None = Field(None, description="Last attempt's run time.")
    worker: str | None = None
    reason: str | None = Field(None, description="Why it was skipped or cancelled.")
    error: StepError | None = None
    retry_at: float | None = None
    wait: dict[str, Any] | None = Field(
        None, description="A wait step's wait: kind (sleep, until, event, approval), "
        "due_at, key, timeout_at, prompt; a sub-workflow step's: kind workflow, run (the "
        "child run it waits for).")
    child_runs: list[str] | None = Field(
        None, description="A sub-workflow step's child runs, one per attempt, oldest "
        "first.")
    resolution: dict[str, Any] | None = Field(
        None, description="What ended the wait: an event (event_id, at, by) or a decision "
        "(decision, comment, by, at).")
    decision: dict[str, Any] | None = Field(
        None, description="Why it ran or was skipped, when a trigger rule other than "
        "all_success, a condition or a failure handler decided: rule, parents (their "
        "statuses), runs; with a condition also when (its text), values (what it read) and "
        "outcome.")
    items: dict[str, int] | None = Field(
        None, description="A map step's items by status (pending: not begun), once it "
        "expanded; the items themselves are not listed here (`orchestrator status RUN "
        "--items STEP`).")
    map: dict[str, Any] | None = Field(
        None, description="A map step's summary: count, failed, stopped, failures (the "
        "first 100: index, type, message).")


class EventSent(WireModel):
    """The answer to ``POST /v1/events/{key}``."""

    key: str
    event_id: str
    new: bool = Field(description="False: the same event id was the key's latest "
                      "already; nothing changed.")
    resumed: int = Field(description="Waiting steps this event resumed now.")


class DecisionIn(WireModel):
    """The body of an approve or reject (optional)."""

    comment: str = Field("", max_length=2000, description="Why (recorded).")


class CallbackTry(WireModel):
    """One try to deliver a run-end callback."""

    attempt: int
    at: float
    ok: bool
    status_code: int | None = None
    error: str | None = None


class CallbackOut(WireModel):
    """The run-end callback of a run: where it goes and how its tries went."""

    url: str
    delivered: bool = Field(description="A try got a 2xx answer.")
    done: bool = Field(description="Delivered, or given up (no more tries).")
    attempts: list[CallbackTry] = Field(default_factory=list,
                                        description="The latest tries, oldest first.")

    @classmethod
    def of(cls, reg: dict[str, Any]) -> CallbackOut:
        """The wire form of a registration of the store."""
        tries = [CallbackTry.model_validate({k: a.get(k) for k in CallbackTry.model_fields})
                 for a in reg.get("attempts") or []]
        return cls(url=str(reg.get("url", "")), delivered=any(a.ok for a in tries),
                   done=bool(reg.get("done")), attempts=tries)


class RunOut(WireModel):
    """A run with every step (pending ones included, in workflow order) and its outputs."""

    run_id: str
    workflow: str
    version: str = Field(description="The workflow version the run is pinned to.")
    status: RunStatus
    input: JsonValue = None
    created_at: float
    started_at: float | None = None
    ended_at: float | None = None
    duration_s: float | None = Field(None, description="Creation to end, once ended.")
    error: str | None = Field(None, description="What failed the run: its first failed "
                              "step and that step's error message; null otherwise.")
    steps: list[StepRunOut] = Field(default_factory=list)
    callback: CallbackOut | None = Field(None, description="The run-end callback, if one "
                                         "was registered (absent from the callback's own "
                                         "body).")
    outputs: dict[str, JsonValue] = Field(default_factory=dict,
                                          description="Step outputs by step id.")
    origin: Origin = Field(default_factory=Origin, description="What started the run: "
                           "a caller (api, cli, broker, python), a schedule's fire or an "
                           "event, with who or what.")
    compensates: str | None = Field(None, description="The run this undo run undoes.")
    parent_run: str | None = Field(None, description="The run whose sub-workflow step "
                                   "started this one (a child run), if any.")
    parent_step: str | None = Field(None, description="That sub-workflow step's id.")
    priority: Priority = Field(Priority.NORMAL, description="The band of queues its steps "
                               "go to: a high run's steps overtake queued normal and low "
                               "ones.")
    reason: str | None = Field(None, description="Why a queued run waits (the "
                               "concurrency key it waits for) or why a run was cancelled "
                               "at a full concurrency limit.")
    queue_position: int | None = Field(None, description="A queued run's place among the "
                                       "runs waiting for its concurrency key (1: next).")
    resumed_from: str | None = Field(None, description="The run this one resumes, if any.")
    resumes: list[str] = Field(default_factory=list, description="The runs that resume "
                               "this one, oldest first.")
    trace_id: str | None = Field(None, description="The run's OpenTelemetry trace id "
                                 "(32 hex digits), on GET /v1/runs/{run_id} when traces "
                                 "are configured; null otherwise.")

    @property
    def ended(self) -> bool:
        """True when the run is in a final status."""
        return self.status.terminal

    def shaped(self, detail: RunDetail) -> RunOut:
        """The run as a caller entitled to ``detail`` sees it.

        ``debug``: everything.  ``full``: everything but the steps' tracebacks.
        ``status``: ids, statuses, attempts and times only: no input, outputs, errors,
        reasons, waits or decisions (a ``runs:write`` token without ``runs:read``).
        """
        if detail == "debug":
            return self
        if detail == "full":
            if all(s.error is None or s.error.traceback is None for s in self.steps):
                return self  # nothing to hide (a copy cost the submit's answer 3 % of CPU)
            steps = [s if s.error is None or s.error.traceback is None else
                     s.model_copy(update={"error": s.error.model_copy(
                         update={"traceback": None})})
                     for s in self.steps]
            return self.model_copy(update={"steps": steps})
        bare = [StepRunOut(step_id=s.step_id, status=s.status, attempt=s.attempt,
                           queued_at=s.queued_at, started_at=s.started_at,
                           ended_at=s.ended_at, duration_s=s.duration_s,
                           retry_at=s.retry_at)
                for s in self.steps]
        return self.model_copy(update={"input": None, "error": None, "steps": bare,
                                       "outputs": {}, "reason": None})

    @classmethod
    def from_view(cls, view: RunView) -> RunOut:
        """Build the wire form of a coordinator's :class:`RunView`."""
        run = view.run
        steps = [
            StepRunOut(
                step_id=s.step_id, status=s.status, attempt=s.attempt or 0,
                queued_at=s.queued_at, started_at=s.started_at, ended_at=s.ended_at,
                duration_s=s.duration_s, worker=s.worker, reason=s.reason,
                error=StepError.model_validate(s.error) if s.error else None,
                retry_at=s.retry_at, wait=s.wait,
                resolution={k: v for k, v in s.resolution.items() if k != "data"}
                if s.resolution else None, decision=s.decision, child_runs=s.child_runs,
                items=view.items.get(s.step_id), map=s.map)
            for s in view.steps]
        return cls(
            run_id=run.run_id, workflow=run.workflow, version=run.version, status=run.status,
            input=run.input, created_at=run.created_at, started_at=run.started_at,
            ended_at=run.ended_at,
            duration_s=(run.ended_at - run.created_at) if run.ended_at is not None else None,
            error=_run_error(view), steps=steps, outputs=view.outputs,
            callback=CallbackOut.of(view.callback) if view.callback else None,
            origin=run.origin, resumed_from=run.resumed_from, resumes=list(run.resumes),
            compensates=run.compensates, priority=run.priority, reason=run.reason,
            queue_position=view.queue_position, parent_run=run.parent_run,
            parent_step=run.parent_step)


def _run_error(view: RunView) -> str | None:
    """What failed the run: its first failed step and that step's error message."""
    for s in view.steps:
        if s.status is StepStatus.FAILED:
            message = (s.error or {}).get("message") or "no message"
            return f"step {s.step_id!r} failed: {message}"
    return None


class ResumeRequest(BaseModel):
    """The body of ``POST /v1/runs/{run_id}/resume`` (every field optional)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    from_step: str | None = Field(None, max_length=200, description="Run this step, and "
                                  "everything downstream of it, again (default: only the "
                                  "steps that did not succeed, and what follows them).")
    input_patch: JsonValue = Field(None, description="A JSON Merge Patch (RFC 7386) "
                                   "applied to the run's input.")
    version: str | None = Field(None, pattern="^[0-9a-f]{6,16}$", description="Resume on "
                                "this stored version (refused if a reused step changed).")


class RunSummary(WireModel):
    """A run in a listing (no steps or outputs: read the run for those)."""

    run_id: str
    workflow: str
    version: str
    status: RunStatus
    created_at: float
    ended_at: float | None = None


class RunPage(WireModel):
    """One page of runs, newest first."""

    runs: list[RunSummary]
    limit: int
    offset: int
    next_offset: int | None = Field(None, description="Offset of the next page; null on "
                                    "the last page.")


class RunEvent(WireModel):
    """One event of a run's stream, as sent by ``GET /v1/runs/{id}/events``.

    ``kind`` is ``run`` (the run changed status) or ``step`` (a step run did); ``id`` is
    the stream id, usable as ``Last-Event-ID`` to resume.
    """

    id: str
    kind: Literal["run", "step"]
    status: str
    step: str | None = None
    attempt: int | None = None
    ts: float

    @classmethod
    def of(cls, ev: Event) -> RunEvent:
        """The wire form of an event of the run store."""
        return cls(id=ev.id, kind="step" if ev.kind == EVENT_STEP else "run",
                   status=ev.status, step=ev.step, attempt=ev.attempt, ts=ev.ts)

    @property
    def ends_run(self) -> bool:
        """True when this event moved the run to a final status."""
        return self.kind == "run" and self.status in {s.value for s in RunStatus
                                                      if s.terminal}


# --- workflows -------------------------------------------------------------------------


class WorkflowSummary(WireModel):
    """A workflow in the catalog listing."""

    name: str
    version: str
    description: str = ""
    label: str | None = None
    step_count: int


class WorkflowList(WireModel):
    """Every cataloged workflow, by name."""

    workflows: list[WorkflowSummary]


class StepInfo(WireModel):
    """One step of a workflow definition."""

    id: str
    function: str
    description: str = ""
    parents: list[str] = Field(description="Steps it waits for: inputs read, `after`, and "
                               "the steps whose failure it handles.")
    when: str | None = None
    trigger_rule: str
    queue: str | None = None
    max_attempts: int
    timeout_s: float | None = None
    on_failure: list[str] = Field(default_factory=list)


class WorkflowDetail(WireModel):
    """A workflow: version, input JSON schema, steps and its graph in Mermaid."""

    name: str
    version: str
    description: str = ""
    label: str | None = None
    input_schema: dict[str, JsonValue]
    default_queue: str | None = None
    steps: list[StepInfo]
    mermaid: str = Field(description="The DAG as a Mermaid flowchart.")

    @classmethod
    def from_workflow(cls, wf: WorkflowDef, mermaid: str) -> WorkflowDetail:
        """Build the wire form of a workflow definition and its rendered graph."""
        deps = wf.dependencies()
        steps = [StepInfo(id=s.id, function=s.function, description=s.description,
                          parents=list(deps.get(s.id, ())), when=s.when,
                          trigger_rule=s.trigger_rule.value, queue=s.queue,
                          max_attempts=s.retry.max_attempts, timeout_s=s.timeout_s,
                          on_failure=list(s.on_failure))
                 for s in wf.steps]
        return cls(name=wf.name, version=wf.version, description=wf.description,
                   label=wf.label, input_schema=dict(wf.input_schema),
                   default_queue=wf.default_queue, steps=steps, mermaid=mermaid)


class VersionOut(WireModel):
    """One stored version of a workflow."""

    version: str
    first_stored: float = Field(description="When it was first stored (epoch seconds).")
    current: bool = Field(description="It is the version this server's catalog runs by "
                          "default.")


class VersionList(WireModel):
    """Every stored version of a workflow, oldest first."""

    name: str
    versions: list[VersionOut]


class FieldChangeOut(WireModel):
    """A field that differs between two versions (dotted name, old and new value)."""

    field: str
    old: JsonValue = None
    new: JsonValue = None


class VersionDiffOut(WireModel):
    """What changed from version ``old`` to version ``new`` of a workflow."""

    old: str
    new: str
    added: list[str] = Field(description="Steps only in `new`.")
    removed: list[str] = Field(description="Steps only in `old`.")
    changed: dict[str, list[FieldChangeOut]] = Field(description="Changed fields by step.")
    workflow: list[FieldChangeOut] = Field(description="Changed workflow-level fields.")


# --- health ----------------------------------------------------------------------------


class Health(WireModel):
    """Liveness (``/healthz``) or readiness (``/readyz``)."""

    status: Literal["ok", "ready"]
    checks: dict[str, str] = Field(default_factory=dict)
