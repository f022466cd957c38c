"""Durable waits, the pure part: what a wait step is, what it records when it parks, and
what a delivery of it does when it comes back.

A wait step (``StepDef.wait``) calls no step function of its own.  Its task parks it:
the step run becomes ``waiting``, its next message waits in a store timer (due when the
sleep ends or the timeout passes, or never) and the task ends, so a waiting step holds
no worker slot and no unacknowledged message.  An event or a decision for the step
records its *resolution* and makes the timer due at once; the reaper publishes the
message, and the delivery that comes back decides here (:func:`outcome`): succeed with
an output, fail (a timeout, a rejection: the step's failure path), or park again.

Kinds:

* ``sleep``: ``duration_s`` seconds; the output is ``{"waited_until": <unix s>}``.
* ``until``: until the CEL expression ``until`` (a timestamp, an RFC 3339 string or unix
  seconds, over ``input`` and ancestors' ``steps.<id>.output``); same output.
* ``event``: until an event whose key equals the CEL expression ``key`` arrives (also one
  that arrived before, within its retention); its payload is the output.  ``timeout_s``
  (optional) fails the step with :class:`WaitTimedOut`.
* ``approval``: until someone approves (the output is the decision) or rejects it (the
  step fails with :class:`ApprovalRejected`); ``timeout_s`` is optional.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from orchestrator.core.registry import default_registry
from orchestrator.errors import RunError

WAIT_FUNCTION = "orchestrator.wait"
"""The function name (and task ``step.orchestrator.wait``) of every wait step."""


class WaitKind(StrEnum):
    """What a wait step waits for."""

    SLEEP = "sleep"
    UNTIL = "until"
    EVENT = "event"
    APPROVAL = "approval"


class Decision(StrEnum):
    """A human's answer to an approval step."""

    APPROVED = "approved"
    REJECTED = "rejected"


class WaitDef(BaseModel):
    """What a wait step waits for (``StepDef.wait``).  Which fields a kind takes is
    checked when the workflow loads (:func:`problems`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: WaitKind
    duration_s: float | None = None
    """``sleep``: how long."""
    until: str | None = None
    """``until``: a CEL expression giving the time to wait for."""
    key: str | None = None
    """``event``: a CEL expression giving the event key, e.g.
    ``"payment:" + input.order_id``."""
    timeout_s: float | None = None
    """``event``, ``approval``: fail the step after this long without an answer."""
    prompt: str = ""
    """``approval``: what the approver is asked (shown by ``status`` and the API)."""

    def expressions(self) -> dict[str, str]:
        """The CEL expressions of this wait, by field (``until``, ``key``)."""
        return {n: t for n, t in (("until", self.until), ("key", self.key)) if t}


_FIELDS = {WaitKind.SLEEP: {"duration_s"}, WaitKind.UNTIL: {"until"},
           WaitKind.EVENT: {"key", "timeout_s"}, WaitKind.APPROVAL: {"timeout_s", "prompt"}}
_REQUIRED = {WaitKind.SLEEP: "duration_s", WaitKind.UNTIL: "until", WaitKind.EVENT: "key"}


def problems(wait: WaitDef) -> list[tuple[str, str]]:
    """Shape problems of a wait, as (message, fix) pairs (empty: fine)."""
    out: list[tuple[str, str]] = []
    need = _REQUIRED.get(wait.kind)
    if need is not None and getattr(wait, need) in (None, ""):
        out.append((f"a {wait.kind.value} wait needs '{need}'.", f"set wait.{need}."))
    for name in ("duration_s", "until", "key", "timeout_s", "prompt"):
        if getattr(wait, name) not in (None, "") and name not in _FIELDS[wait.kind]:
            out.append((f"a {wait.kind.value} wait takes no '{name}'.",
                        f"remove wait.{name}, or change wait.kind."))
    for name in ("duration_s", "timeout_s"):
        v = getattr(wait, name)
        if v is not None and not (v > 0 and math.isfinite(v)):
            out.append((f"wait.{name} is {v}.", f"set wait.{name} above 0."))
    return out


class WaitTimedOut(RunError):
    """A wait step's timeout passed before its event or decision came (its failure path
    runs: ``on_failure`` handlers, trigger rules)."""


class ApprovalRejected(RunError):
    """An approval step was rejected (its failure path runs)."""


class StepNotWaiting(RunError):
    """An approval was given for a step that does not wait for one (now)."""


class WaitError(RunError):
    """A wait's expression gave something unusable (not a time, not a key)."""


@dataclass(frozen=True)
class Parked:
    """What a waiting step run records (the ``wait`` field of its record): all times in
    unix seconds (Redis' clock), rounded to the millisecond."""

    kind: WaitKind
    due_at: float | None = None
    """``sleep`` and ``until``: when the wait is over."""
    key: str | None = None
    """``event``: the key it waits for."""
    timeout_at: float | None = None
    """``event`` and ``approval``: when it times out (None: never)."""
    prompt: str = ""

    @property
    def timer_at(self) -> float | None:
        """When its timer is due (None: never; only an event or decision wakes it)."""
        return self.due_at if self.due_at is not None else self.timeout_at

    def to_record(self) -> dict[str, Any]:
        """The JSON the store keeps."""
        out: dict[str, Any] = {"kind": self.kind.value}
        for name in ("due_at", "key", "timeout_at"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.prompt:
            out["prompt"] = self.prompt
        return out

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Parked:
        """Read the ``wait`` field of a step record."""
        return cls(kind=WaitKind(data["kind"]), due_at=_opt(data.get("due_at")),
                   key=data.get("key"), timeout_at=_opt(data.get("timeout_at")),
                   prompt=str(data.get("prompt") or ""))


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _opt(v: Any) -> float | None:
    return None if v is None else float(v)


def to_unix_s(value: Any, text: str) -> float:
    """A wait time from an ``until`` expression's value: unix seconds (a number), or an
    RFC 3339 / ISO 8601 string (a CEL ``timestamp`` becomes one).

    Raises:
        WaitError: anything else, or a string without a time zone.
    """
    if isinstance(value, bool):
        raise WaitError(f"wait 'until' {text!r} gave a bool; give a timestamp")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise WaitError(f"wait 'until' {text!r} gave {value!r}, not an RFC 3339 time; "
                            "write e.g. timestamp(input.ship_at)") from None
        if when.tzinfo is None:
            raise WaitError(f"wait 'until' {text!r} gave {value!r} without a time zone; "
                            "add one (e.g. 'Z')")
        return when.timestamp()
    raise WaitError(f"wait 'until' {text!r} gave {type(value).__name__}; give a timestamp")


def event_key(value: Any, text: str) -> str:
    """The event key a ``key`` expression gave.

    Raises:
        WaitError: not a non-empty string, or longer than :data:`MAX_KEY_CHARS`.
    """
    if not isinstance(value, str) or not value:
        raise WaitError(f"wait 'key' {text!r} gave {value!r}; it must give a non-empty "
                        "string, e.g. \"payment:\" + input.order_id")
    check_key(value)
    return value


MAX_KEY_CHARS = 200


def check_key(key: str) -> str:
    """Return ``key`` if it can name events.

    Raises:
        WaitError: empty, too long, or with whitespace or control characters.
    """
    if not key or len(key) > MAX_KEY_CHARS or any(c.isspace() or not c.isprintable()
                                                  for c in key):
        raise WaitError(f"event key {key[:MAX_KEY_CHARS]!r} is not usable: give 1 to "
                        f"{MAX_KEY_CHARS} printable characters without spaces")
    return key


def park(wait: WaitDef, now: float, values: dict[str, Any]) -> Parked:
    """What a wait step records when it starts waiting.

    Args:
        now: Redis' clock, unix seconds.
        values: each of :meth:`WaitDef.expressions` evaluated (JSON values).

    Raises:
        WaitError: an expression gave an unusable value.
    """
    def at(delay: float | None) -> float | None:
        return None if delay is None else round(now + delay, 3)

    if wait.kind is WaitKind.SLEEP:
        return Parked(WaitKind.SLEEP, due_at=at(wait.duration_s or 0.0))
    if wait.kind is WaitKind.UNTIL:
        return Parked(WaitKind.UNTIL,
                      due_at=round(to_unix_s(values.get("until"), wait.until or ""), 3))
    if wait.kind is WaitKind.EVENT:
        return Parked(WaitKind.EVENT, key=event_key(values.get("key"), wait.key or ""),
                      timeout_at=at(wait.timeout_s))
    return Parked(WaitKind.APPROVAL, timeout_at=at(wait.timeout_s), prompt=wait.prompt)


@dataclass(frozen=True)
class Outcome:
    """What a delivery of a waiting step does: ``succeed`` with ``output``, ``fail`` with
    ``error``, or ``wait`` (park again: it came before the wait was over)."""

    action: str
    output: Any = None
    error: RunError | None = None


def outcome(parked: Parked, resolution: dict[str, Any] | None, now: float) -> Outcome:
    """Decide a delivery of a waiting step.

    Args:
        parked: what the step recorded when it parked.
        resolution: what an event (``event_id``, ``data`` as JSON text, ``at``) or a
            decision (``decision``, ``comment``, ``by``, ``at``) recorded, or None.
        now: Redis' clock, unix seconds.
    """
    if resolution is not None and parked.kind is WaitKind.EVENT and "data" in resolution:
        return Outcome("succeed", output=json.loads(str(resolution["data"])))
    if resolution is not None and parked.kind is WaitKind.APPROVAL \
            and resolution.get("decision"):
        answer = {k: resolution.get(k) for k in ("decision", "comment", "by", "at")}
        if resolution["decision"] == Decision.APPROVED.value:
            return Outcome("succeed", output=answer)
        comment = f": {resolution.get('comment')}" if resolution.get("comment") else ""
        return Outcome("fail", error=ApprovalRejected(
            f"rejected by {resolution.get('by') or 'someone'}{comment}"))
    if parked.due_at is not None:
        if now >= parked.due_at:
            return Outcome("succeed", output={"waited_until": parked.due_at})
        return Outcome("wait")
    if parked.timeout_at is not None and now >= parked.timeout_at:
        what = f"event {parked.key!r}" if parked.kind is WaitKind.EVENT else "a decision"
        return Outcome("fail", error=WaitTimedOut(
            f"no {what} came before the timeout ({_utc(parked.timeout_at)}); send it "
            "sooner, or raise wait.timeout_s"))
    return Outcome("wait")


def _wait_step() -> Any:
    """A wait step's function: never called (its task parks the step run instead)."""
    raise WaitError("a wait step's function is never called; run it on a worker")


default_registry.register(WAIT_FUNCTION, _wait_step)
