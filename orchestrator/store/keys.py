"""Every Redis key of the run store, built here and only here, under one prefix."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Key builders for one ``prefix`` (``Settings.key_prefix``)."""

    prefix: str = "orch"

    def definition(self, version: str) -> str:
        """String: the workflow's JSON, by version."""
        return f"{self.prefix}:def:{version}"

    def plan(self, version: str) -> str:
        """String: the compiled plan's JSON, by workflow version."""
        return f"{self.prefix}:plan:{version}"

    def run(self, run_id: str) -> str:
        """Hash: the run's fields (workflow, version, status, input, times, counters)."""
        return f"{self.prefix}:run:{run_id}"

    def steps(self, run_id: str) -> str:
        """Hash: step id -> step run JSON (status, attempt, times, worker, error)."""
        return f"{self.prefix}:run:{run_id}:steps"

    def outputs(self, run_id: str) -> str:
        """Hash: step id -> output JSON."""
        return f"{self.prefix}:run:{run_id}:out"

    def counters(self, run_id: str) -> str:
        """Hash: unit id -> predecessor units not yet finished."""
        return f"{self.prefix}:run:{run_id}:counters"

    def units_done(self, run_id: str) -> str:
        """Set: finished units."""
        return f"{self.prefix}:run:{run_id}:done"

    def units_claimed(self, run_id: str) -> str:
        """Set: units whose dispatch was claimed by exactly one process."""
        return f"{self.prefix}:run:{run_id}:claimed"

    def units_published(self, run_id: str) -> str:
        """Set: units whose canvas was published."""
        return f"{self.prefix}:run:{run_id}:published"

    def events(self, run_id: str) -> str:
        """Stream: the run's events, for live following."""
        return f"{self.prefix}:run:{run_id}:events"

    def run_keys(self, run_id: str) -> list[str]:
        """Every key of one run (for retention)."""
        return [self.run(run_id), self.steps(run_id), self.outputs(run_id),
                self.counters(run_id), self.units_done(run_id), self.units_claimed(run_id),
                self.units_published(run_id), self.events(run_id)]

    def runs_index(self) -> str:
        """Sorted set: every run id, scored by creation time."""
        return f"{self.prefix}:runs"

    def runs_by_workflow(self, workflow: str) -> str:
        """Sorted set: run ids of one workflow, scored by creation time."""
        return f"{self.prefix}:runs:wf:{workflow}"

    def runs_by_status(self, status: str) -> str:
        """Sorted set: run ids in one status, scored by creation time."""
        return f"{self.prefix}:runs:status:{status}"

    def idempotency(self, key_digest: str) -> str:
        """String: JSON ``{"fingerprint", "run_id"}`` of one API ``Idempotency-Key``.

        ``key_digest`` is the SHA-256 hex of the client's key, so any header value is safe
        in a key name.  Set with NX and the idempotency window as its TTL.
        """
        return f"{self.prefix}:idem:{key_digest}"

    def idempotency_of(self, client_key: str) -> str:
        """The key of a client's ``Idempotency-Key`` header value (hashed here)."""
        return self.idempotency(hashlib.sha256(client_key.encode()).hexdigest())

    def callback(self, run_id: str) -> str:
        """String: JSON ``{"url", "registered_at"}`` of the run's run-end callback."""
        return f"{self.prefix}:run:{run_id}:callback"

    def callbacks_pending(self) -> str:
        """Sorted set: ids of runs whose callback is not yet claimed for delivery.

        Scored by registration time; removing an id (ZREM returning 1) is the claim, so
        exactly one process delivers each callback.
        """
        return f"{self.prefix}:callbacks:pending"

    def callbacks_feed(self) -> str:
        """Stream: one entry per new callback registration, to wake the deliverers."""
        return f"{self.prefix}:callbacks:feed"

    def metrics(self) -> str:
        """Hash: run and step counters and step-duration histogram buckets, by workflow."""
        return f"{self.prefix}:metrics"
