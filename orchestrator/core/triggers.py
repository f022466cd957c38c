"""Event triggers: what maps an event (a signed webhook, a Redis Streams entry) to a run.

A trigger names a workflow, a source and three CEL expressions over the event:

* ``filter`` (bool; default: every event): false means no run, recorded as *filtered*;
* ``input`` (any JSON; default: the event itself): the run's input;
* ``event_id`` (a string or a number; default ``id``, the transport's own message id:
  ``webhook-id``, ``X-GitHub-Delivery``, a stream entry's ``id`` field or else its entry
  id): what deduplicates, as the run id ``evt-<trigger>-<hash of the event id>``.

The expressions see ``event`` (the JSON body or the stream entry's ``event`` field),
``headers`` (the webhook's headers, lower-cased; a stream entry's other fields) and
``id``.  A trigger is declared beside its workflow (``triggers:`` in YAML,
``Workflow.trigger`` in the DSL) and is no part of the workflow's content: it never
changes :attr:`WorkflowDef.version`.  Everything here is pure; the settings-dependent
checks (the workflow exists, a webhook's secret is set) are in
:mod:`orchestrator.runtime.triggers`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from orchestrator.core.expressions import Expression, parse
from orchestrator.core.models import WORKFLOW_NAME
from orchestrator.core.tenants import DEFAULT_TENANT, TENANT_NAME
from orchestrator.errors import ConditionError, EventInvalid, Problem, TriggerInvalid

TRIGGER_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$"
VARIABLES = frozenset({"event", "headers", "id"})
"""What a trigger's expressions may read."""
RUN_ID_PREFIX = "evt-"
MAX_EVENT_ID_CHARS = 1000
MAX_TOLERANCE_S = 300.0
"""The widest timestamp window of a Standard Webhooks signature (the package's own)."""


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WebhookScheme(StrEnum):
    """How an inbound webhook is signed."""

    STANDARD = "standard"
    """Standard Webhooks: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``
    (``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``); the secret is
    ``whsec_<base64>``."""
    GITHUB = "github"
    """GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``, no timestamp:
    replays are refused by ``X-GitHub-Delivery`` (the event id)."""


class WebhookSource(Frozen):
    """``POST /v1/hooks/<trigger>``, signed with the secret ``ORCH_TRIGGER_SECRETS[<trigger>]``."""

    kind: Literal["webhook"] = "webhook"
    scheme: WebhookScheme = WebhookScheme.STANDARD
    tolerance_s: float = Field(MAX_TOLERANCE_S, gt=0, le=MAX_TOLERANCE_S, description=(
        "How far the signed timestamp may be from the server's clock (Standard Webhooks)."))


class StreamSource(Frozen):
    """A Redis stream any service ``XADD``s to: ``XADD <stream> * event '<json>' [id <id>]``."""

    kind: Literal["stream"] = "stream"
    stream: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\s]+$")]


Source = Annotated[WebhookSource | StreamSource, Field(discriminator="kind")]


class TriggerDef(Frozen):
    """One event trigger (the frozen model YAML and the DSL both produce)."""

    name: Annotated[str, Field(pattern=TRIGGER_NAME)]
    workflow: Annotated[str, Field(pattern=WORKFLOW_NAME)]
    source: Source
    filter: str | None = None
    input: str | None = None
    event_id: str | None = None
    description: str = ""
    tenant: Annotated[str, Field(pattern=TENANT_NAME)] = DEFAULT_TENANT
    """Whose the trigger and its runs are (``orchestrator.core.tenants``): only tokens of
    this tenant (or ``admin``) see it, its events and its runs."""

    def expressions(self) -> dict[str, str]:
        """The expressions that are set, by field name."""
        fields = {"filter": self.filter, "input": self.input, "event_id": self.event_id}
        return {k: v for k, v in fields.items() if v is not None}


EventSource = Literal["webhook", "stream"]


class EventOutcome(StrEnum):
    """What became of one event."""

    ACCEPTED = "accepted"
    """A run was started."""
    DUPLICATE = "duplicate"
    """Its event id had started a run already: no new run."""
    FILTERED = "filtered"
    """The filter was false: no run."""
    INVALID = "invalid"
    """A poison event: not JSON, an expression failed on it, or the input is invalid."""
    REJECTED = "rejected"
    """Not authentic: unsigned, a bad signature or a timestamp outside the window."""


class EventRecord(BaseModel):
    """One event as recorded in the trigger's capped list (newest first)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    at: float = Field(default_factory=time.time, description="When it was handled (Unix s).")
    trigger: str
    outcome: EventOutcome
    source: EventSource
    event_id: str | None = None
    run_id: str | None = None
    reason: str = ""
    message_id: str | None = Field(None, description="The transport's id: webhook-id, "
                                   "X-GitHub-Delivery or the stream entry id.")


@dataclass(frozen=True)
class Event:
    """An event as a trigger's expressions see it (already authenticated)."""

    body: JsonValue
    headers: dict[str, str]
    message_id: str
    """The transport's own id (``id`` in the expressions)."""

    def activation(self) -> dict[str, Any]:
        return {"event": self.body, "headers": self.headers, "id": self.message_id}


@dataclass(frozen=True)
class Decision:
    """What a trigger makes of one event: no run (``run_input`` None, filtered), or a run
    with this id and input."""

    event_id: str
    run_id: str | None
    run_input: JsonValue = None

    @property
    def filtered(self) -> bool:
        return self.run_id is None


@dataclass(frozen=True)
class Trigger:
    """A checked :class:`TriggerDef` with its expressions parsed."""

    definition: TriggerDef
    filter: Expression | None
    input: Expression | None
    event_id: Expression | None

    @property
    def name(self) -> str:
        return self.definition.name

    def decide(self, event: Event) -> Decision:
        """Apply the filter, the event-id expression and the input mapping to ``event``.

        Returns:
            The decision: filtered, or the deterministic run id and the run input.

        Raises:
            EventInvalid: an expression failed on this event, or the event id is empty,
                not a string or number, or longer than 1000 characters.
        """
        act = event.activation()
        try:
            eid_value = self.event_id.value(act) if self.event_id else event.message_id
            if isinstance(eid_value, bool) or not isinstance(eid_value, str | int | float):
                raise EventInvalid(f"event_id {self.definition.event_id!r} gave "
                                   f"{type(eid_value).__name__}, not a string; make it "
                                   "yield the event's unique id (a string)")
            eid = str(eid_value)
            if not eid or len(eid) > MAX_EVENT_ID_CHARS:
                raise EventInvalid(f"the event id is empty or longer than "
                                   f"{MAX_EVENT_ID_CHARS} characters; send a unique id")
            if self.filter is not None and not self.filter.truth(act):
                return Decision(eid, None)
            run_input = self.input.value(act) if self.input else event.body
        except ConditionError as exc:
            raise EventInvalid(f"trigger {self.name!r}: {exc}") from None
        return Decision(eid, run_id(self.name, eid), run_input)


def run_id(trigger: str, event_id: str) -> str:
    """The run id of a trigger's event: ``evt-<trigger>-<first 32 hex of SHA-256>``, the
    same for every delivery of the event, so that it starts at most one run."""
    digest = hashlib.sha256(event_id.encode()).hexdigest()[:32]
    return f"{RUN_ID_PREFIX}{trigger}-{digest}"


def from_data(data: Any, workflow: str, where: str = "<data>") -> TriggerDef:
    """Build a trigger from plain data (a ``triggers:`` item of a workflow's YAML).

    Args:
        data: the item; its ``workflow`` may be left out (it is the enclosing one).
        workflow: the enclosing workflow's name.
        where: where the item is, for messages (``file.yaml: triggers.0``).

    Raises:
        TriggerInvalid: every shape problem (``unknown_source`` for a source kind that is
            neither webhook nor stream, ``bad_field`` otherwise).
    """
    name = str(data.get("name", where)) if isinstance(data, dict) else where
    if not isinstance(data, dict):
        raise TriggerInvalid(name, [Problem("bad_field", f"{where}: a trigger must be a "
                                            "mapping.", "write name, source, and "
                                            "optionally filter, input, event_id.")])
    item = {"workflow": workflow, **data}
    try:
        return TriggerDef.model_validate(item)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
                problems.append(Problem(
                    "unknown_source", f"{where}: {loc}: {err['msg']}.",
                    "set source.kind to webhook (with scheme standard or github) or "
                    "stream (with stream: <name>).", workflow))
            else:
                problems.append(Problem("bad_field", f"{where}: {loc}: {err['msg']}.",
                                        "correct the field as the message says.", workflow))
        raise TriggerInvalid(name, problems) from None


def check(td: TriggerDef) -> Trigger:
    """Parse a trigger's expressions: every problem at once.

    Raises:
        TriggerInvalid: ``bad_expression`` for each expression that does not parse or
            reads a variable other than ``event``, ``headers`` and ``id``.
    """
    parsed: dict[str, Expression | None] = {"filter": None, "input": None, "event_id": None}
    problems: list[Problem] = []
    for field_name, text in td.expressions().items():
        try:
            parsed[field_name] = parse(text, VARIABLES)
        except ConditionError as exc:
            problems.append(Problem(
                "bad_expression", f"{field_name}: {exc}.",
                f"write {field_name} in CEL over event, headers and id (e.g. "
                "event.data.order_id).", td.workflow))
    if problems:
        raise TriggerInvalid(td.name, problems)
    return Trigger(td, parsed["filter"], parsed["input"], parsed["event_id"])
