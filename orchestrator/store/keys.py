"""Every Redis key of the run store, built here and only here, under one prefix."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from orchestrator.core.tenants import DEFAULT_TENANT


def store_prefix(prefix: str, cluster: bool) -> str:
    """The prefix of every key for ``Settings.key_prefix``: on a Redis Cluster, under one
    hash tag (``{orch}``, unless the prefix carries a tag already), so that every key of
    the store hashes to one slot and each script, which touches a run's keys and the
    shared indexes together, runs on one node."""
    if not cluster:
        return prefix
    start = prefix.find("{")  # Redis' rule: the first "{", then the first "}" after it
    if start != -1 and prefix.find("}", start + 1) > start + 1:
        return prefix  # a non-empty tag already: Redis hashes only what is inside it
    return "{" + prefix + "}"


@dataclass(frozen=True)
class Keys:
    """Key builders for one ``prefix`` (``Settings.key_prefix``)."""

    prefix: str = "orch"

    def schema(self) -> str:
        """Hash: the store's schema ``version`` and the ``release`` that set it."""
        return f"{self.prefix}:schema"

    def definition(self, version: str) -> str:
        """String: the workflow's JSON, by version."""
        return f"{self.prefix}:def:{version}"

    def plan(self, version: str) -> str:
        """String: the compiled plan's JSON, by workflow version."""
        return f"{self.prefix}:plan:{version}"

    def rate(self, scope: str) -> str:
        """String: a rate limit's budget (the next start's time, ms; ``rate_limit.lua``)."""
        return f"{self.prefix}:rate:{scope}"

    def concurrency_holders(self, scope: str) -> str:
        """Sorted set: what holds a slot of a concurrency scope
        (``orchestrator.core.concurrency``: ``wf:<workflow>:<key>`` holds run ids,
        ``step:<function>:<key>`` holds ``<run id>|<step id>``), scored by when each took
        it (ms of Redis' clock).  Members leave at their final status."""
        return f"{self.prefix}:conc:{scope}:holders"

    def concurrency_queue(self, scope: str) -> str:
        """List: what waits for a slot of a concurrency scope, oldest first (a
        workflow's: the run hash keys of ``queued`` runs; a step's: JSON entries naming
        the step run and its held message's timer)."""
        return f"{self.prefix}:conc:{scope}:queue"

    def slots(self, run_id: str) -> str:
        """Hash: step id -> the concurrency slot its step run holds or waits for (JSON:
        holders and queue keys, member, ``held`` or the waiting entry)."""
        return f"{self.prefix}:run:{run_id}:slots"

    def versions(self, name: str) -> str:
        """Sorted set: every stored version of the workflow ``name``, scored by the time
        (epoch seconds) it was first stored.  Never expires, like the definitions."""
        return f"{self.prefix}:versions:{name}"

    def run(self, run_id: str) -> str:
        """Hash: the run's fields (workflow, version, status, input, times, counters, and
        ``epoch``: the ``run_id`` of the Redis server that created it, for the restart
        grace of ``lua/lib.lua``)."""
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

    def maps(self, run_id: str) -> str:
        """Hash: the state of the run's map steps, fields ``<step>|<name>``: ``count``
        (items), ``next`` (items published so far), ``left`` (items not ended), ``fails``,
        ``policy`` (failures tolerated, -1 any), ``window`` (max_parallel, 0 none),
        ``stopped`` (1 once it stopped publishing: too many failures), ``failures`` (JSON
        list of the first failures kept).  See ``store/maps.py``."""
        return f"{self.prefix}:run:{run_id}:maps"

    def leases(self, run_id: str) -> str:
        """Hash: step id -> the lease on its step run, ``token|until|tag|flag``.

        ``until`` is in milliseconds of Redis' clock; ``tag`` the broker delivery tag of the
        message being executed; ``flag`` is ``settled`` once the step ended and its canvas
        went on, ``restored`` once its message went back to the queue."""
        return f"{self.prefix}:run:{run_id}:leases"

    def run_keys(self, run_id: str) -> list[str]:
        """Every key of one run (for retention)."""
        return [self.run(run_id), self.steps(run_id), self.outputs(run_id),
                self.counters(run_id), self.units_done(run_id), self.units_claimed(run_id),
                self.units_published(run_id), self.events(run_id), self.leases(run_id),
                self.maps(run_id),
                self.slots(run_id)]

    def lease_index(self) -> str:
        """Sorted set: ``<run id>|<step id>`` of every live lease, scored by its expiry (ms
        of Redis' clock): what the reaper reads."""
        return f"{self.prefix}:leases"

    def claims(self) -> str:
        """Sorted set: ``<run id>|<unit id>`` of units claimed for dispatch and not yet
        published, scored by the claim's time (ms): the reaper publishes stale ones."""
        return f"{self.prefix}:claims"

    def timers(self) -> str:
        """Sorted set: ids of retry timers, scored by when they are due (ms)."""
        return f"{self.prefix}:timers"

    def timer(self, timer_id: str) -> str:
        """String: the task message (a signature's JSON) a retry timer publishes."""
        return f"{self.prefix}:timer:{timer_id}"

    def workers_holding(self) -> str:
        """Hash: worker name -> ``<until>|<tags JSON>``: the broker delivery tags of the
        step and join messages the worker holds (begun or prefetched), which its lease
        keeper writes every ``lease_s / 4``, valid until ``until`` (ms of Redis' clock).
        The reaper puts back an unacknowledged message that no live worker holds (its
        worker died holding it prefetched)."""
        return f"{self.prefix}:workers:holding"

    def reaper_lock(self) -> str:
        """String: which worker reaps now (``SET NX PX``)."""
        return f"{self.prefix}:reaper"

    # kombu's own keys of the Redis transport (no prefix: kombu names them)
    @staticmethod
    def unacked() -> str:
        """Hash: delivery tag -> ``[message, exchange, routing key]`` of delivered,
        unacknowledged messages (kombu's Redis transport)."""
        return "unacked"

    @staticmethod
    def unacked_index() -> str:
        """Sorted set: delivery tags of unacknowledged messages by delivery time (kombu)."""
        return "unacked_index"

    def runs_index(self) -> str:
        """Sorted set: every run id, scored by creation time."""
        return f"{self.prefix}:runs"

    def runs_by_workflow(self, workflow: str) -> str:
        """Sorted set: run ids of one workflow, scored by creation time."""
        return f"{self.prefix}:runs:wf:{workflow}"

    def runs_by_status(self, status: str) -> str:
        """Sorted set: run ids in one status, scored by creation time."""
        return f"{self.prefix}:runs:status:{status}"

    def runs_by_tenant(self, tenant: str) -> str:
        """Sorted set: run ids of one tenant other than the default one, scored by
        creation time (the default tenant's runs are listed from :meth:`runs_index`)."""
        return f"{self.prefix}:runs:tenant:{tenant}"

    def idempotency(self, key_digest: str) -> str:
        """String: JSON ``{"fingerprint", "run_id"}`` of one API ``Idempotency-Key``.

        ``key_digest`` is the SHA-256 hex of the client's key, so any header value is safe
        in a key name.  Set with NX and the idempotency window as its TTL.
        """
        return f"{self.prefix}:idem:{key_digest}"

    def idempotency_of(self, client_key: str, tenant: str = DEFAULT_TENANT) -> str:
        """The key of a client's ``Idempotency-Key`` header value (hashed here) within
        ``tenant``: the same header value of two tenants names two keys.  (The default
        tenant's keys are named as before tenants existed; another tenant's have their
        own namespace, so no header value of one can name a key of another.)"""
        digest = hashlib.sha256(client_key.encode()).hexdigest()
        if tenant == DEFAULT_TENANT:
            return self.idempotency(digest)
        scope = hashlib.sha256(tenant.encode()).hexdigest()[:32]
        return f"{self.prefix}:idem:tenant:{scope}:{digest}"

    def callback(self, run_id: str) -> str:
        """String: JSON ``{"url", "registered_at", "attempts", "delivery"}`` of the run's
        run-end callback (``attempts``: the latest tries; ``delivery``: the last)."""
        return f"{self.prefix}:run:{run_id}:callback"

    def callback_parts(self) -> tuple[str, str]:
        """What comes before and after the run id in :meth:`callback` (for a script
        that builds the keys of the runs it reads)."""
        before, after = self.callback("\n").split("\n")
        return before, after

    def callbacks_pending(self) -> str:
        """Sorted set: ids of runs whose callback is registered and not yet delivered (or
        given up), scored by registration time."""
        return f"{self.prefix}:callbacks:pending"

    def callbacks_outbox(self) -> str:
        """Sorted set: ids of ended runs whose callback is to be delivered, scored by when
        the next try is due (ms): any worker delivers them."""
        return f"{self.prefix}:callbacks:outbox"

    def rejected_submissions(self) -> str:
        """List: broker submissions that started no run, newest first (capped)."""
        return f"{self.prefix}:submissions:rejected"

    def metrics(self) -> str:
        """Hash: run and step counters and step-duration histogram buckets, by workflow."""
        return f"{self.prefix}:metrics"

    def rate_limits(self) -> str:
        """Prefix of the API's per-token rate-limit windows, which the ``limits`` package
        keeps under it (``<this>:LIMITER/api/<token id>/...``: lists of hit times that
        expire with their window; ``orchestrator/api/quotas.py``)."""
        return f"{self.prefix}:ratelimit"

    # --- event triggers ------------------------------------------------------------------
    def trigger_events(self, trigger: str) -> str:
        """List: the trigger's handled events (JSON ``EventRecord`` s), newest first,
        capped at ``Settings.trigger_events_kept``."""
        return f"{self.prefix}:trigger:{trigger}:events"

    def trigger_group(self, trigger: str) -> str:
        """Not a key: the name of the trigger's consumer group on its stream."""
        return f"{self.prefix}:trigger:{trigger}"

    @staticmethod
    def event_stream(stream: str) -> str:
        """Stream: a stream trigger's source, named by the trigger as other services
        ``XADD`` to it (no prefix: it is theirs)."""
        return stream

    # --- schedules (orchestrator.store.schedules) ----------------------------------------
    def schedule(self, schedule_id: str) -> str:
        """Hash: one schedule: ``spec`` (its JSON), ``source`` (declared, api), ``paused``,
        ``next`` (its earliest fire not yet handled, Unix s), ``gen`` (bumped by every
        change), ``last_fire``, ``last_run``, ``queued`` (JSON list of waiting fires),
        counters and the last error."""
        return f"{self.prefix}:sched:{schedule_id}"

    def schedule_parts(self) -> tuple[str, str]:
        """What comes before and after the id in :meth:`schedule` (for scripts)."""
        before, after = self.schedule("\n").split("\n")
        return before, after

    def schedules(self) -> str:
        """Set: the id of every schedule (paused ones too)."""
        return f"{self.prefix}:schedules"

    def schedules_due(self) -> str:
        """Sorted set: ids of active schedules, scored by when a scheduler must next look
        at each (ms of Redis' clock): its next fire, or the end of a scheduler's claim."""
        return f"{self.prefix}:schedules:due"

    def schedulers(self) -> str:
        """Sorted set: scheduler names, scored by when each was last seen (ms)."""
        return f"{self.prefix}:schedulers"

    # --- durable waits (orchestrator.store.waits) ----------------------------------------
    def _wait_space(self, tenant: str) -> str:
        # the default tenant's keys are named as before tenants existed
        return "wait" if tenant == DEFAULT_TENANT else f"wait:tenant:{tenant}"

    def wait_event(self, key: str, tenant: str = DEFAULT_TENANT) -> str:
        """Hash: the latest event sent for event ``key`` of ``tenant`` (``id``, ``at``,
        ``data`` as JSON text, ``by``), kept ``Settings.event_retention_s`` so that a step
        that starts waiting for it later still gets it."""
        return f"{self.prefix}:{self._wait_space(tenant)}:event:{key}"

    def wait_waiters(self, key: str, tenant: str = DEFAULT_TENANT) -> str:
        """Set: ``<run id>|<step id>`` of the steps of ``tenant``'s runs waiting for
        event ``key`` now."""
        return f"{self.prefix}:{self._wait_space(tenant)}:waiters:{key}"

    def steps_parts(self) -> tuple[str, str]:
        """What comes before and after the run id in :meth:`steps` (for a script that
        builds the keys of the runs it reads)."""
        before, after = self.steps("\n").split("\n")
        return before, after
