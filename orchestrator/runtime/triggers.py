"""Event triggers at run time: the checked table of a deployment's triggers, and the one
protocol that turns an authenticated event into at most one run (:class:`Intake`).

Both sources (the webhook route, the stream consumer) call :meth:`Intake.deliver`; neither
strings store calls together itself.  The run id is a function of the trigger and the
event id (:func:`orchestrator.core.triggers.run_id`), and the store creates a run id at
most once (``RunExists``): so a redelivered or replayed event finds its run and starts
none, whichever process handles it and however often.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydantic import SecretStr

from orchestrator.core.origin import Origin, OriginKind
from orchestrator.core.tenants import DEFAULT_TENANT
from orchestrator.core.triggers import (
    Event,
    EventOutcome,
    EventRecord,
    EventSource,
    StreamSource,
    Trigger,
    WebhookSource,
)
from orchestrator.core.triggers import check as check_trigger
from orchestrator.errors import (
    EventInvalid,
    InputInvalid,
    Problem,
    RunExists,
    TriggerInvalid,
    TriggerNotFound,
)
from orchestrator.runtime.catalog import Catalog
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.settings import Settings, env_name
from orchestrator.store.triggers import TriggerStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TriggerTable:
    """A deployment's triggers, each checked against its catalog and settings."""

    triggers: dict[str, Trigger]
    secrets: dict[str, SecretStr]

    @classmethod
    def build(cls, catalog: Catalog, settings: Settings, webhooks: bool = True
              ) -> TriggerTable:
        """Check every cataloged trigger: its workflow is cataloged, and (with
        ``webhooks``: for the API, which serves them) a webhook trigger's secret is set
        (``ORCH_TRIGGER_SECRETS``).

        Raises:
            TriggerInvalid: for the first trigger with problems, listing all of its own.
        """
        out: dict[str, Trigger] = {}
        for name, td in sorted(catalog.triggers.items()):
            problems: list[Problem] = []
            if td.workflow not in catalog.workflows:
                known = ", ".join(sorted(catalog.workflows)) or "(none)"
                problems.append(Problem(
                    "unknown_workflow", f"the workflow {td.workflow!r} is not cataloged.",
                    f"name one of: {known}.", td.workflow))
            if webhooks and isinstance(td.source, WebhookSource):
                secret = settings.trigger_secrets.get(name)
                if secret is None or not secret.get_secret_value():
                    problems.append(Problem(
                        "missing_secret", f"the webhook trigger has no signing secret in "
                        f"{env_name('trigger_secrets')}.",
                        f"set {env_name('trigger_secrets')}='{{\"{name}\": \"<secret>\"}}' "
                        + ("(whsec_<base64>, as the sender's Standard Webhooks secret)"
                           if td.source.scheme == "standard"
                           else "(the GitHub webhook's secret)") + ".", td.workflow))
            if problems:
                raise TriggerInvalid(name, problems)
            out[name] = check_trigger(td)
        return cls(out, dict(settings.trigger_secrets))

    def get(self, name: str) -> Trigger:
        """The trigger called ``name``.

        Raises:
            TriggerNotFound: no such trigger.
        """
        try:
            return self.triggers[name]
        except KeyError:
            raise TriggerNotFound(f"no trigger named {name!r}") from None

    def secret(self, name: str) -> str:
        """The signing secret of webhook trigger ``name`` (checked present by build)."""
        return self.secrets[name].get_secret_value()

    def streams(self) -> list[tuple[Trigger, StreamSource]]:
        """The stream triggers with their sources, by name."""
        return [(t, t.definition.source) for t in self.triggers.values()
                if isinstance(t.definition.source, StreamSource)]


class Intake:
    """Turns events into runs: decide, start at most once, record."""

    def __init__(self, coordinator: Coordinator, store: TriggerStore, events_kept: int
                 ) -> None:
        """Args:
            coordinator: starts the runs.
            store: records every event in its trigger's capped list.
            events_kept: the length of each list (``Settings.trigger_events_kept``).
        """
        self.coordinator = coordinator
        self.store = store
        self.events_kept = events_kept

    def deliver(self, trigger: Trigger, event: Event, source: EventSource) -> EventRecord:
        """Apply ``trigger`` to an authenticated ``event`` and start its run, once.

        Args:
            source: ``webhook`` or ``stream`` (recorded).

        Returns:
            The event's record (already stored): ``accepted`` with the new run's id,
            ``duplicate`` with the existing run's id (its event id had started it),
            ``filtered``, or ``invalid`` with the reason (a poison event: retrying it
            cannot help).

        Raises:
            StoreError, kombu's OperationalError: Redis failed; the event may or may not
                have started its run, and delivering it again is safe (it is deduplicated).
        """
        def record(outcome: EventOutcome, reason: str = "", event_id: str | None = None,
                   run_id: str | None = None) -> EventRecord:
            return self._record(EventRecord(
                trigger=trigger.name, source=source, message_id=event.message_id,
                outcome=outcome, reason=reason, event_id=event_id, run_id=run_id))

        try:
            decision = trigger.decide(event)
        except EventInvalid as exc:
            return record(EventOutcome.INVALID, str(exc))
        if decision.run_id is None:
            return record(EventOutcome.FILTERED, "the filter is false", decision.event_id)
        tenant = trigger.definition.tenant
        origin = Origin(kind=OriginKind.EVENT, trigger=trigger.name,
                        event_id=decision.event_id,
                        tenant=None if tenant == DEFAULT_TENANT else tenant)
        outcome, reason = EventOutcome.ACCEPTED, ""
        try:
            self.coordinator.submit(trigger.definition.workflow, decision.run_input,
                                    run_id=decision.run_id, origin=origin)
        except RunExists:
            outcome, reason = EventOutcome.DUPLICATE, "its event id started a run already"
        except InputInvalid as exc:
            outcome, reason = EventOutcome.INVALID, str(exc)
        run = decision.run_id if outcome is not EventOutcome.INVALID else None
        return record(outcome, reason, decision.event_id, run)

    def reject(self, trigger: str, source: EventSource, reason: str, message_id: str | None = None,
               outcome: EventOutcome = EventOutcome.REJECTED) -> EventRecord:
        """Record an event refused before it reached its trigger's expressions (not
        authentic, too large, not JSON)."""
        return self._record(EventRecord(trigger=trigger, source=source, outcome=outcome,
                                        reason=reason, message_id=message_id))

    def _record(self, rec: EventRecord) -> EventRecord:
        self.store.record(rec, self.events_kept)
        level = logging.INFO if rec.outcome in (EventOutcome.ACCEPTED,
                                                EventOutcome.DUPLICATE,
                                                EventOutcome.FILTERED) else logging.WARNING
        log.log(level, "trigger %s: event %s %s%s%s", rec.trigger,
                rec.event_id or rec.message_id or "-", rec.outcome.value,
                f" (run {rec.run_id})" if rec.run_id else "",
                f": {rec.reason}" if rec.reason and rec.outcome not in (
                    EventOutcome.DUPLICATE, EventOutcome.FILTERED) else "")
        return rec
