"""The run store in Redis: runs, step runs, outputs, unit counters and event streams.

State changes go through the Lua scripts of :mod:`orchestrator.store.scripts`, so each is
atomic and checked against the one transition table in :mod:`orchestrator.core.states`;
an illegal transition is refused, not applied.  Every key comes from
:class:`orchestrator.store.keys.Keys`.  Nothing outside this package holds a Redis client
for run data: the runtime, the CLI and the API call this class (or, in the API's event
loop, :class:`orchestrator.store.reader.AsyncRunReader`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from pydantic import ValidationError

from orchestrator import release
from orchestrator.core.concurrency import Admission, Slot
from orchestrator.core.models import WorkflowDef
from orchestrator.core.origin import Origin
from orchestrator.core.plan import Plan
from orchestrator.core.priorities import Priority, stored_priority
from orchestrator.core.states import (
    RunStatus,
    StepStatus,
    held_sources,
    run_sources,
    step_sources,
)
from orchestrator.core.tenants import DEFAULT_TENANT, sees, tenant_of
from orchestrator.errors import RunDamaged, RunExists, RunNotFound
from orchestrator.outages import mask_url
from orchestrator.store import connection, schema, scripts
from orchestrator.store.connection import RedisTarget, target_of
from orchestrator.store.fields import (
    RUN_STARTED,
    Metrics,
    runs_metric,
)
from orchestrator.store.keys import Keys, store_prefix
from orchestrator.store.records import LeaseMode, Resumed, RunRecord, StepRun
from orchestrator.store.run_cache import RunCache

WAKE_TIMER_PREFIX = "wait:"
"""The prefix of a parked step's timer id (``store.waits.wait_timer_id``): a child run
that ends makes its parent step's timer due (``run_transition.lua``)."""

Snapshot = tuple[RunRecord, dict[str, StepRun], dict[str, Any], dict[str, Any] | None]
"""A run read in one round trip (:meth:`RunStore.snapshot`): its record, the records and
outputs of the steps asked for, its run-end callback's registration (or None)."""

_ADMISSIONS = {1: Admission.STARTED, 2: Admission.QUEUED, 3: Admission.CANCELLED,
               4: Admission.DISPLACED}
"""``create_run.lua``'s answers."""

SOCKET_TIMEOUT_S = 15.0
"""Default longest wait for one Redis command (blocking reads of the store ask for less)."""


@dataclass(frozen=True)
class Completed:
    """A unit's completion (``complete_unit_on`` in ``lua/lib.lua``)."""

    remaining: int
    """Units of the run still to finish after this one (-1: the run is gone)."""
    ready: list[str]
    """Successor units this completion claimed for dispatch."""
    priority: Priority
    """The run's priority: the band the claimed successors are published in."""


def _completed(reply: Sequence[Any]) -> Completed:
    """``complete_unit_on``'s reply: {remaining (nil: the run is gone), claimed units,
    the run's priority}."""
    remaining, ready, *rest = reply
    return Completed(int(remaining if remaining is not None else -1),
                     [str(u) for u in ready], stored_priority(rest[0] if rest else None))


class RunStore:
    """Redis-backed store of runs.  Thread-safe as redis-py's client is."""

    def __init__(self, client: redis.Redis, keys: Keys, retention_s: int,
                 url: str = "", broker: redis.Redis | None = None,
                 broker_url: str = "") -> None:
        # redis-py types replies as ``bytes | str``; with decode_responses=True they are str
        self._r: Any = client
        self._b: Any = client if broker is None else broker
        self.keys = keys
        self.retention_s = retention_s
        self.url = mask_url(url) if url else "(this Redis)"
        """Where the store is, password masked (for messages)."""
        self.broker_url = mask_url(broker_url) if broker_url else self.url
        """Where the broker is (the store's URL unless apart), password masked."""
        self.cluster = connection.speaks_cluster(client)
        """Whether the store is a Redis Cluster (``ORCH_REDIS_CLUSTER``)."""
        self._schema_ok = False
        self.runs_seen = RunCache()
        """Runs whose fixed fields :meth:`begin_step` read already (this process)."""

    @property
    def client(self) -> redis.Redis:
        """The underlying client (decoded responses), for what is not run data: the
        Redis that step functions may use for their own systems (``StepContext.redis``)
        and the broker's queue lists.  Run data goes through this class's methods."""
        client: redis.Redis = self._r
        return client

    @property
    def broker_client(self) -> redis.Redis:
        """A client (decoded responses) of the broker's Redis, where the queues and
        kombu's unacknowledged messages are: :attr:`client` itself unless
        ``Settings.broker_apart``."""
        client: redis.Redis = self._b
        return client

    @property
    def broker_apart(self) -> bool:
        """Whether the broker is another Redis than this store's."""
        return self._b is not self._r

    def ping(self) -> bool:
        """True when Redis answers."""
        return bool(self._r.ping())

    def check_schema(self) -> None:
        """Make sure this release may use the store (once per store object): record the
        schema version on a new store, refuse another one (see :mod:`.schema`).

        Raises:
            StoreSchemaMismatch: the store has another schema version.
            StoreIsCluster: the store's (or the broker's) Redis is a Redis Cluster node.
        """
        if not self._schema_ok:
            if not self.cluster:  # a cluster client refuses a standalone server itself
                schema.refuse_cluster(self._r, self.url, "ORCH_REDIS_URL")
            if self.broker_apart:
                schema.refuse_cluster(self._b, self.broker_url, "ORCH_BROKER_URL")
            schema.ensure(self._r, self.keys, self.url, release.current())
            self._schema_ok = True

    @property
    def schema_checked(self) -> bool:
        """Whether :meth:`check_schema` passed on this store object."""
        return self._schema_ok

    def schema(self) -> schema.Schema | None:
        """The store's recorded schema (None: none recorded yet)."""
        return schema.read(self._r, self.keys)

    @classmethod
    def from_url(cls, url: RedisTarget | str, prefix: str, retention_s: int,
                 timeout_s: float = SOCKET_TIMEOUT_S,
                 broker: RedisTarget | str | None = None) -> RunStore:
        """Connect to ``url`` (decoded responses) and build a store.

        Args:
            url: one server's URL, or a target (``Settings.redis_target``: also a
                Sentinel group, see :mod:`.connection`).
            timeout_s: how long one command may wait for Redis (connecting included): a
                dead link fails a call instead of hanging it.
            broker: the broker's Redis (``Settings.broker_target``), where the queues
                are; None or the same target: ``url``'s.
        """
        target = target_of(url)
        keys = Keys(store_prefix(prefix, target.cluster))

        def connect(where: RedisTarget) -> redis.Redis:
            return connection.client(where, decode_responses=True, home=keys.schema(),
                                     health_check_interval=25, socket_keepalive=True,
                                     socket_timeout=timeout_s,
                                     socket_connect_timeout=min(timeout_s, 5.0))

        other = target_of(broker) if broker is not None else target
        apart = other != target
        return cls(connect(target), keys, retention_s,
                   target.url, broker=connect(other) if apart else None,
                   broker_url=other.url if apart else "")

    # --- definitions ---------------------------------------------------------------------

    def save_definition(self, wf: WorkflowDef, plan: Plan) -> bool:
        """Store a workflow version and its plan (idempotent: a version never changes).

        Returns:
            False if the version's plan was stored before (by any process, maybe of
            another release, whose compiler may cut the same workflow otherwise): then
            the stored plan is the version's, not ``plan``.
        """
        p = self._r.pipeline(transaction=False)
        # the definition without defaults: a field added later (with a default) is left
        # out unless used, so the previous release still parses it (see :mod:`.schema`).
        # The plan keeps its defaults: its unions are told apart by their default ``kind``.
        p.set(self.keys.definition(wf.version),
              wf.model_dump_json(by_alias=True, exclude_defaults=True), nx=True)
        p.set(self.keys.plan(wf.version), plan.model_dump_json(), nx=True)
        p.zadd(self.keys.versions(wf.name), {wf.version: time.time()}, nx=True)
        return bool(p.execute()[1])

    def versions(self, name: str) -> list[tuple[str, float]]:
        """Every stored version of workflow ``name`` with the time it was first stored,
        oldest first (versions stored before release 0.2 are not indexed)."""
        return [(v, float(t)) for v, t in
                self._r.zrange(self.keys.versions(name), 0, -1, withscores=True)]

    def load_definition(self, version: str) -> tuple[WorkflowDef, Plan]:
        """Return the workflow and plan a run pinned to.

        Raises:
            RunNotFound: the version is not stored (expired or never submitted).
        """
        wf_raw, plan_raw = self._r.mget(self.keys.definition(version), self.keys.plan(version))
        if wf_raw is None or plan_raw is None:
            raise RunNotFound(f"workflow version {version} is not in the store")
        try:
            return WorkflowDef.model_validate_json(wf_raw), Plan.model_validate_json(plan_raw)
        except ValidationError as exc:
            unknown = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()
                              if e["type"] == "extra_forbidden"})
            if not unknown:
                raise RunDamaged(f"workflow version {version} is stored damaged: {exc}; "
                                 "submit the workflow again (a new run)") from None
            raise RunDamaged(
                f"workflow version {version} uses what this release "
                f"({release.current()}) does not know ({', '.join(unknown)}): a newer "
                "release stored it; run that release's workers for its runs") from None

    # --- runs ----------------------------------------------------------------------------

    def create_run(self, run_id: str, wf: WorkflowDef, plan: Plan, run_input: Any,
                   origin: Origin | None = None, resumed: Resumed | None = None,
                   compensates: str | None = None, faults: str | None = None,
                   priority: Priority = Priority.NORMAL,
                   parent: tuple[str, str] | None = None,
                   slot: Slot | None = None) -> tuple[Admission, str]:
        """Create a run in ``running`` with its unit counters, and index it; ``origin``
        records what started it, ``priority`` the band of queues its tasks go to.  With
        ``resumed``, the new run resumes another: in the same transaction it takes the
        reused steps' records and outputs, and both runs record the lineage
        (``resumed_from``, ``resumes``).  ``compensates``: the run
        this undo run undoes.  ``faults``: faults to inject (JSON; tests only).
        ``parent``: (run, step) of the sub-workflow step that starts this child run; the
        run that ends it wakes that step (``run_transition.lua``).
        ``slot``: the slot of its workflow's concurrency limit it takes in the same
        script (:mod:`orchestrator.core.concurrency`); with every slot held it is created
        ``queued`` or ``cancelled``, or displaces the oldest holder, by ``when_full``.

        Returns:
            (what became of it, the holder it displaced or "").

        Raises:
            RunExists: a run with this id exists (ids are claimed atomically).
        """
        keys, args = self._create_call(run_id, wf, plan, run_input, origin, resumed,
                                       compensates, faults, priority, parent)
        if slot is not None:
            args[0] = json.dumps({**json.loads(args[0]), **self.slot_fields(slot)})
            args += self._slot_args(run_id, plan, slot)
        if resumed is None:
            created = scripts.CREATE_RUN(self._r, keys, args)
        else:
            k = self.keys
            scripts.load(self._r)  # in MULTI, a missing script is not loaded and retried
            tx = self._r.pipeline(transaction=True)
            scripts.CREATE_RUN.queue(tx, keys, args)
            scripts.REUSE_STEPS.queue(
                tx, [k.run(run_id), k.steps(run_id), k.outputs(run_id), k.events(run_id),
                     k.run(resumed.run_id)],
                [resumed.run_id, json.dumps(resumed.records), json.dumps(resumed.outputs),
                 repr(time.time())])
            created = tx.execute()[0]
        admission, displaced = _admitted(run_id, created)
        if admission is Admission.CANCELLED:
            self.expire_run(run_id)
        return admission, displaced

    async def acreate_run(self, aclient: Any, run_id: str, wf: WorkflowDef, plan: Plan,
                          run_input: Any, origin: Origin | None = None,
                          priority: Priority = Priority.NORMAL) -> None:
        """:meth:`create_run` on an asyncio client (the API's event loop), for a run that
        resumes nothing and takes no concurrency slot: the same script, created
        ``running``.

        Raises:
            RunExists: a run with this id exists.
            ValueError: ``wf`` has a concurrency limit (use :meth:`create_run`).
        """
        if wf.concurrency is not None:
            raise ValueError(f"workflow {wf.name!r} has a concurrency limit: its runs take "
                             "a slot as they are created (RunStore.create_run)")
        keys, args = self._create_call(run_id, wf, plan, run_input, origin, None, None,
                                       None, priority)
        _admitted(run_id, await scripts.CREATE_RUN.acall(aclient, keys, args))

    def _slot_args(self, run_id: str, plan: Plan, slot: Slot) -> list[Any]:
        """The arguments of ``create_run.lua`` for a run that takes a concurrency slot:
        the scope's keys, the limit, and what starts the run should it wait."""
        k = self.keys
        start = {"claimed": k.units_claimed(run_id), "events": k.events(run_id),
                 "sources": list(plan.sources)}
        return [k.concurrency_holders(slot.scope), k.concurrency_queue(slot.scope),
                slot.limit, slot.when_full, json.dumps(start), slot.waiting, slot.refused,
                k.runs_by_status(RunStatus.QUEUED.value),
                k.runs_by_status(RunStatus.CANCELLED.value)]

    def slot_fields(self, slot: Slot) -> dict[str, str]:
        """The fields a run that takes a concurrency slot records (the run transition
        script reads the keys to release the slot)."""
        k = self.keys
        return {"slot_key": slot.value, "slot_holders": k.concurrency_holders(slot.scope),
                "slot_queue": k.concurrency_queue(slot.scope)}

    def queue_position(self, run_id: str) -> int | None:
        """A ``queued`` run's place among the runs waiting for its concurrency key (1:
        next), None if it waits in no queue."""
        key = self._r.hget(self.keys.run(run_id), "slot_queue")
        if not key:
            return None
        pos = self._r.lpos(key, self.keys.run(run_id))
        return None if pos is None else int(pos) + 1

    def _create_call(self, run_id: str, wf: WorkflowDef, plan: Plan, run_input: Any,
                     origin: Origin | None, resumed: Resumed | None,
                     compensates: str | None, faults: str | None,
                     priority: Priority = Priority.NORMAL,
                     parent: tuple[str, str] | None = None
                     ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of ``create_run.lua`` for a new run."""
        now = repr(time.time())
        k = self.keys
        # one script: a process killed mid-creation leaves no half-made run behind (a
        # claimed id with nothing else would make every retry of the request a no-op)
        origin = origin or Origin()
        tenant = tenant_of(origin.tenant)
        fields = {
            "run_id": run_id, "workflow": wf.name, "version": wf.version,
            "status": RunStatus.RUNNING.value, "input": json.dumps(run_input),
            "created_at": now, "started_at": now, "units_remaining": str(len(plan.units)),
            "origin": origin.to_json(), "tenant": tenant,
        }
        counts = {u: str(n) for u, n in plan.predecessor_counts.items() if n}
        # another tenant's runs are indexed by tenant too (the default one's are listed
        # from the index of all runs, which a previous release writes as well)
        by_tenant = [] if tenant == DEFAULT_TENANT else [k.runs_by_tenant(tenant)]
        if resumed is not None:
            fields["resumed_from"] = resumed.run_id
        if compensates is not None:
            fields["compensates"] = compensates
        if faults is not None:
            fields["faults"] = faults
        if priority is not Priority.NORMAL:
            fields["priority"] = priority.value
        if parent is not None:
            fields["parent_run"], fields["parent_step"] = parent
        return ([k.run(run_id), k.counters(run_id), k.runs_index(),
                 k.runs_by_workflow(wf.name), k.runs_by_status(RunStatus.RUNNING.value),
                 k.metrics(), k.events(run_id), *by_tenant],
                [json.dumps(fields), json.dumps(counts), now,
                 runs_metric(wf.name, RUN_STARTED)])

    def missing(self, run_id: str) -> RunNotFound:
        """The error of a run that is not in the store (the API answers it, too, for a
        run of another tenant: the two must not differ)."""
        return RunNotFound(f"run {run_id!r} is not in the store (unknown id, or expired "
                           f"after the retention of {self.retention_s} s)")

    def exists(self, run_id: str) -> bool:
        """True when the run is in the store."""
        return bool(self._r.exists(self.keys.run(run_id)))

    def run(self, run_id: str) -> RunRecord:
        """Return the run's record.

        Raises:
            RunNotFound: no such run (never created, or expired by retention).
            RunDamaged: the record is partial or malformed.
        """
        return self._record(run_id, self._r.hgetall(self.keys.run(run_id)))

    def _record(self, run_id: str, d: dict[str, str]) -> RunRecord:
        """The run record of hash ``d`` (RunNotFound when empty, RunDamaged when bad)."""
        if not d:
            raise self.missing(run_id)
        try:
            return RunRecord.from_hash(run_id, d)
        except (KeyError, ValueError, TypeError) as exc:
            raise RunDamaged(f"run {run_id!r} has a damaged record ({type(exc).__name__}: "
                             f"{exc}; fields: {', '.join(sorted(d))}); delete its keys "
                             f"({self.keys.run(run_id)}*) or let retention remove "
                             "them") from None

    def transition_run(self, run_id: str, status: RunStatus, **fields: Any) -> bool:
        """Move the run to ``status`` if the table allows it; return whether it moved.

        A run that ends holding a concurrency slot passes it to the oldest run queued
        for its key, whose first units are claimed then: see :meth:`end_run`, whose
        caller publishes them (here, the reaper does after ``claim_grace_s``).

        Raises:
            RunNotFound: no such run.
        """
        return self.end_run(run_id, status, **fields)[0]

    def end_run(self, run_id: str, status: RunStatus, **fields: Any
                ) -> tuple[bool, Passed | None]:
        """:meth:`transition_run`, and the run that took the slot of its concurrency key
        this run left (None for none): it moved from ``queued`` to ``running`` and its
        source units are claimed by the caller, who publishes them.

        Raises:
            RunNotFound: no such run.
        """
        k = self.keys
        now = time.time()
        if status.terminal:
            fields.setdefault("ended_at", now)
        order = list(RunStatus)
        res = scripts.RUN_TRANSITION(
            self._r,
            [k.run(run_id), k.events(run_id), k.metrics(), k.callback(run_id),
             k.callbacks_outbox(), *[k.runs_by_status(s.value) for s in order], k.claims()],
            [status.value, _joined(run_sources(status)), now, json.dumps(fields),
             _joined(order), *k.steps_parts(), k.timers(), WAKE_TIMER_PREFIX],
        )
        if int(res[0]) == -1:
            raise RunNotFound(f"run {run_id!r} is not in the store")
        moved = int(res[0]) == 1
        if moved and status.terminal:
            self.expire_run(run_id)
        if not moved or len(res) < 5 or not res[2]:
            return moved, None
        return moved, Passed(str(res[2]), str(res[3]), stored_priority(res[4] or None))

    def expire_run(self, run_id: str) -> None:
        """Apply retention to every key of the run."""
        p = self._r.pipeline(transaction=False)
        for key in self.keys.run_keys(run_id):
            p.expire(key, self.retention_s)
        p.execute()

    def list_runs(self, workflow: str | None = None, status: RunStatus | None = None,
                  offset: int = 0, limit: int = 50, tenant: str | None = None) -> list[str]:
        """Run ids, newest first, from the indexes (no key scans): :meth:`page_runs`
        without the count."""
        return self.page_runs(workflow, status, offset, limit, tenant)[0]

    def page_runs(self, workflow: str | None = None, status: RunStatus | None = None,
                  offset: int = 0, limit: int = 50, tenant: str | None = None
                  ) -> tuple[list[str], int]:
        """Run ids, newest first, from the indexes (no key scans), and how many index
        entries were read for them.

        Runs whose keys expired by retention are dropped from the indexes read here as
        they are met, so a page may hold fewer than ``limit`` ids.  ``offset`` counts
        entries of the index read: while ``limit`` were read, ``offset + limit`` is the
        next page's offset.

        Args:
            tenant: only this tenant's runs (None: every tenant's).  Another tenant than
                the default one is read from its own index; the default tenant's runs
                are read from the index of all runs and the others' are left out of the
                page (so its page is short by as many).
        """
        k = self.keys
        indexes = [k.runs_index()]
        if tenant is not None and tenant != DEFAULT_TENANT:
            indexes.append(k.runs_by_tenant(tenant))
        if workflow:
            indexes.append(k.runs_by_workflow(workflow))
        if status:
            indexes.append(k.runs_by_status(status.value))
        if len(indexes) > 2:
            ids = self._r.zinter(indexes[1:], aggregate="MAX", withscores=True)
            found = [i for i, _ in sorted(ids, key=lambda x: -x[1])][offset:offset + limit]
        else:
            found = self._r.zrevrange(indexes[-1], offset, offset + limit - 1)
        if not found:
            return [], 0
        p = self._r.pipeline(transaction=False)
        for rid in found:
            p.hmget(k.run(rid), "run_id", "tenant")
        rows = p.execute()
        gone = [rid for rid, row in zip(found, rows, strict=True) if row[0] is None]
        if gone:
            p = self._r.pipeline(transaction=False)
            for index in indexes:
                p.zrem(index, *gone)
            p.execute()
        return [rid for rid, row in zip(found, rows, strict=True)
                if row[0] is not None and sees(tenant, row[1])], len(found)

    def parent(self, run_id: str) -> tuple[str, str] | None:
        """(run, step) of the sub-workflow step whose child run this is, or None."""
        run, step = self._r.hmget(self.keys.run(run_id), "parent_run", "parent_step")
        return (str(run), str(step)) if run and step else None

    def tenant(self, run_id: str) -> str | None:
        """The tenant of the run, or None when it is not in the store."""
        owner = self.owner(run_id)
        return None if owner is None else owner[0]

    def owner(self, run_id: str) -> tuple[str, str] | None:
        """The run's tenant and workflow version (one read), or None when it is not in
        the store."""
        rid, tenant, version = self._r.hmget(self.keys.run(run_id), "run_id", "tenant",
                                             "version")
        return None if rid is None else (tenant_of(tenant), str(version or ""))

    # --- step runs -------------------------------------------------------------------------

    def transition_step(self, run_id: str, step_id: str, status: StepStatus,
                        output: Any = None, has_output: bool = False, workflow: str = "",
                        token: str = "", **patch: Any) -> bool:
        """Move a step run to ``status`` if allowed; store ``output`` when ``has_output``.

        With ``workflow``, a final status also counts in the step metrics (totals by
        status, and the duration histogram for succeeded and failed step runs).  With
        ``token``, the caller must hold the step run's lease (fencing).

        Returns:
            True if it moved; False if the transition table or the lease refused it, or
            the run is gone.
        """
        return self.step_transition(run_id, step_id, status, output, has_output, workflow,
                                    token, **patch) == 1

    def step_transition(self, run_id: str, step_id: str, status: StepStatus,
                        output: Any = None, has_output: bool = False, workflow: str = "",
                        token: str = "", followers: Sequence[str] = (),
                        canvas: Sequence[tuple[str, tuple[Any, ...]]] = (),
                        slotted: bool = True, **patch: Any) -> int:
        """:meth:`transition_step`, answering why: 1 moved, 0 refused by the table,
        -1 the run is gone, -2 refused because ``token`` does not hold the lease.

        ``followers`` (with a final ``status``): the steps whose tasks the caller's task
        publishes as its canvas goes on; they become ``queued`` in the same script.
        ``canvas``: the broker commands of that publish
        (:func:`orchestrator.runtime.canvas.held_chain`), sent by the same script when
        it moves the step run to a final status, which also settles its lease (a later
        copy of its message is dropped); when it does not move, nothing is sent.
        ``slotted``: whether the step run may hold a concurrency slot, which a final
        status gives up (False, for a step with no concurrency limit, spares the look).

        Raises:
            ValueError: a command other than ``lpush``, ``publish`` and ``pexpire``.
        """
        return int(self._step_transition(run_id, step_id, status, output, has_output,
                                         workflow, token, followers, "", (), patch,
                                         canvas, slotted)[0])

    def end_step(self, run_id: str, step_id: str, status: StepStatus, unit: str,
                 successors: Sequence[str], output: Any = None, has_output: bool = False,
                 workflow: str = "", token: str = "", slotted: bool = True, **patch: Any
                 ) -> tuple[int, Completed | None]:
        """Move the terminal step of ``unit`` to a final ``status`` and, in the same
        script, complete the unit (as :meth:`complete_unit_in_band`, whose successors are
        ``successors``) unless the call was fenced or the run is gone: one round trip
        where a step's end and its unit's completion took two.

        Returns:
            (as :meth:`step_transition`; the unit's completion, None when it did not
            complete here: fenced, or the run is gone).
        """
        res = self._step_transition(run_id, step_id, status, output, has_output, workflow,
                                    token, (), unit, successors, patch, slotted=slotted)
        code = int(res[0])
        if code < 0 or len(res) < 6:
            return code, None
        return code, _completed(res[3:])

    def _step_transition(self, run_id: str, step_id: str, status: StepStatus, output: Any,
                         has_output: bool, workflow: str, token: str,
                         followers: Sequence[str], unit: str, successors: Sequence[str],
                         patch: dict[str, Any],
                         canvas: Sequence[tuple[str, tuple[Any, ...]]] = (),
                         slotted: bool = True) -> list[Any]:
        k = self.keys
        keys = [k.run(run_id), k.steps(run_id), k.events(run_id), k.outputs(run_id),
                k.metrics(), k.leases(run_id), k.lease_index(), k.slots(run_id), k.timers(),
                k.counters(run_id), k.units_done(run_id), k.units_claimed(run_id),
                k.claims()]
        sources = held_sources(status) if token else step_sources(status)
        args = [step_id, status.value, _joined(sources), json.dumps(patch),
                json.dumps(output) if has_output else "", time.time(), workflow, token,
                lease_member(run_id, step_id), "1" if slotted else "0", unit, run_id,
                len(successors), *successors,
                len(followers), *followers]
        _broker_commands(canvas, keys, args)
        res: list[Any] = scripts.STEP_TRANSITION(self._r, keys, args)
        return res

    def retry_later(self, run_id: str, step_id: str, token: str, error: dict[str, Any],
                    delay_s: float, timer_id: str, message: str) -> int:
        """Move the step run to ``retrying`` (fenced by ``token``, whose lease it gives up)
        and hold ``message``, the next attempt's task, in a timer due in ``delay_s``.

        Returns:
            As :meth:`step_transition`.
        """
        k = self.keys
        retry_at = time.time() + delay_s
        res = scripts.RETRY_LATER(
            self._r,
            [k.run(run_id), k.steps(run_id), k.events(run_id), k.outputs(run_id), k.metrics(),
             k.leases(run_id), k.lease_index(), k.timers(), k.timer(timer_id)],
            [step_id, _joined((held_sources if token else step_sources)(StepStatus.RETRYING)),
             json.dumps({"error": error, "retry_at": retry_at}), time.time(), token,
             lease_member(run_id, step_id), timer_id, int(delay_s * 1000), message,
             self.retention_s],
        )
        return int(res[0])

    def due_timers(self, rearm_s: float, limit: int = 100) -> list[tuple[str, str | None]]:
        """Retry timers due now, re-armed ``rearm_s`` later until :meth:`timers_done`.

        Returns:
            (timer id, the message to publish; None if it expired) for each.
        """
        k = self.keys
        flat = scripts.DUE(self._r, [k.timers()], [int(rearm_s * 1000), limit, k.timer(""), ""])
        return [(str(flat[i]), flat[i + 1] or None) for i in range(0, len(flat), 2)]

    def take_timer(self, timer_id: str, rearm_s: float) -> str | None:
        """Take one timer if it is due now: re-armed ``rearm_s`` later until
        :meth:`timers_done` (as :meth:`due_timers`), its message returned (None: not
        due, or gone)."""
        k = self.keys
        message = scripts.TAKE_TIMER(self._r, [k.timers(), k.timer(timer_id)],
                                     [timer_id, int(rearm_s * 1000)])
        return str(message) if message else None

    def timers_done(self, timer_ids: Sequence[str]) -> None:
        """Forget timers whose messages were published."""
        if not timer_ids:
            return
        p = self._r.pipeline(transaction=False)
        p.zrem(self.keys.timers(), *timer_ids)
        for t in timer_ids:  # one key a DEL: a Redis Cluster pipeline takes no multi-key DEL
            p.delete(self.keys.timer(t))
        p.execute()

    def published(self, run_id: str, units: Sequence[str], step_ids: Iterable[str]) -> None:
        """Record that these units' canvases were published (their claims are done) and
        that their steps are ``queued`` (skipping steps already past it): one round
        trip, after the publish, so that ``queued`` means a message exists."""
        now = time.time()
        k = self.keys
        keys = [k.run(run_id), k.steps(run_id), k.events(run_id), k.outputs(run_id),
                k.metrics(), k.leases(run_id), k.lease_index()]
        sources = _joined(step_sources(StepStatus.QUEUED))
        patch = json.dumps({"queued_at": now})

        def fill(pipe: Any) -> None:
            for s in step_ids:
                scripts.STEP_TRANSITION.queue(
                    pipe, keys, [s, StepStatus.QUEUED.value, sources, patch, "", now, "", "",
                                 lease_member(run_id, s), "0", "", run_id, 0, 0])
            if units:
                pipe.sadd(k.units_published(run_id), *units)
                pipe.zrem(k.claims(), *(lease_member(run_id, u) for u in units))

        scripts.execute(self._r, fill)

    def publish_units(self, run_id: str, units: Sequence[tuple[str, Sequence[str],
                                                          Sequence[tuple[str, tuple[Any, ...]]]]],
                      claim: bool) -> list[str]:
        """Publish units and record them, in one script (``publish_units.lua``): for each
        ``(unit, entry steps, broker commands)``, take the unit's claim (``claim``; else
        the caller claimed it before and its claims-index entry goes), run the broker's
        commands (:class:`orchestrator.runtime.broker.Captured`: the task messages'
        LPUSH, the task-sent events' PUBLISH), record the unit published and its entry
        steps ``queued``.  A unit claimed by another caller publishes nothing, nor does a
        run that is gone.

        Returns:
            The units published by this call.

        Raises:
            ValueError: a command other than ``lpush``, ``publish`` and ``pexpire``.
        """
        keys, args = self._publish_call(run_id, units, claim)
        return [str(u) for u in scripts.PUBLISH_UNITS(self._r, keys, args)]

    async def apublish_units(self, aclient: Any, run_id: str,
                             units: Sequence[tuple[str, Sequence[str],
                                                   Sequence[tuple[str, tuple[Any, ...]]]]],
                             claim: bool, step_ids: Sequence[str] | None = None
                             ) -> tuple[list[str], Snapshot | None]:
        """:meth:`publish_units` on an asyncio client (the API's event loop), the same
        script with the same arguments; with ``step_ids``, followed in the same round
        trip by :meth:`snapshot`'s reads, which then see the run as published.

        Returns:
            The units published by this call, and the snapshot (None without
            ``step_ids``).
        """
        keys, args = self._publish_call(run_id, units, claim)

        def fill(p: Any) -> None:
            scripts.PUBLISH_UNITS.queue(p, keys, args)
            if step_ids is not None:
                self._snapshot_reads(p, run_id, step_ids)

        got = await scripts.aexecute(aclient, fill)
        published = [str(u) for u in got[0]]
        if step_ids is None:
            return published, None
        return published, self._snapshot_of(run_id, step_ids, got[1:])

    def _publish_call(self, run_id: str,
                      units: Sequence[tuple[str, Sequence[str],
                                            Sequence[tuple[str, tuple[Any, ...]]]]],
                      claim: bool) -> tuple[list[str], list[Any]]:
        """The keys and arguments of ``publish_units.lua``."""
        now = time.time()
        k = self.keys
        keys = [k.run(run_id), k.steps(run_id), k.events(run_id), k.outputs(run_id),
                k.metrics(), k.units_claimed(run_id), k.units_published(run_id), k.claims()]
        args: list[Any] = [run_id, "1" if claim else "0", now,
                           json.dumps({"queued_at": now}),
                           _joined(step_sources(StepStatus.QUEUED))]
        for unit, steps, commands in units:
            args += [unit, len(steps), *steps, len(commands)]
            _broker_commands(commands, keys, args)
        return keys, args

    def step_runs(self, run_id: str, step_ids: Sequence[str] | None = None) -> dict[str, StepRun]:
        """Step records (``pending`` for steps with none yet)."""
        key = self.keys.steps(run_id)
        if step_ids is None:
            raw = self._r.hgetall(key)
            return {s: StepRun.from_json(s, v) for s, v in raw.items()}
        if not step_ids:
            return {}
        vals = self._r.hmget(key, list(step_ids))
        return {s: StepRun.from_json(s, v) for s, v in zip(step_ids, vals, strict=True)}

    def snapshot(self, run_id: str, step_ids: Sequence[str]) -> Snapshot:
        """The run, the records and outputs of ``step_ids`` and the run-end callback's
        registration, in one round trip (what :meth:`run`, :meth:`step_runs`,
        :meth:`outputs` and ``CallbackRegistry.get`` read, one pipeline).

        Raises:
            RunNotFound: no such run.  RunDamaged: as :meth:`run`.
        """
        p = self._r.pipeline(transaction=False)
        self._snapshot_reads(p, run_id, step_ids)
        return self._snapshot_of(run_id, step_ids, p.execute())

    def _snapshot_reads(self, p: Any, run_id: str, step_ids: Sequence[str]) -> None:
        """Queue :meth:`snapshot`'s reads in the pipeline ``p``."""
        k, ids = self.keys, list(step_ids)
        p.hgetall(k.run(run_id))
        if ids:
            p.hmget(k.steps(run_id), ids)
            p.hmget(k.outputs(run_id), ids)
        p.get(k.callback(run_id))

    def _snapshot_of(self, run_id: str, step_ids: Sequence[str], got: Sequence[Any]
                     ) -> Snapshot:
        """What :meth:`snapshot`'s reads (``got``) say."""
        ids = list(step_ids)
        raw, callback = got[0], got[-1]
        recs, outs = (got[1], got[2]) if ids else ([], [])
        run = self._record(run_id, raw)
        records = {s: StepRun.from_json(s, v) for s, v in zip(step_ids, recs, strict=True)}
        outputs = {s: json.loads(v) for s, v in zip(step_ids, outs, strict=True)
                   if v is not None}
        return run, records, outputs, None if callback is None else dict(json.loads(callback))

    def outputs(self, run_id: str, step_ids: Sequence[str] | None = None) -> dict[str, Any]:
        """Stored outputs by step id (steps without an output are absent)."""
        key = self.keys.outputs(run_id)
        if step_ids is None:
            return {s: json.loads(v) for s, v in self._r.hgetall(key).items()}
        if not step_ids:
            return {}
        vals = self._r.hmget(key, list(step_ids))
        return {s: json.loads(v) for s, v in zip(step_ids, vals, strict=True) if v is not None}

    def reusable(self, run_id: str, step_ids: Sequence[str]) -> Resumed:
        """What a run resuming ``run_id`` takes of ``step_ids``: their records, marked
        ``reused_from`` the run, and their outputs, as stored (steps without one give
        none)."""
        if not step_ids:
            return Resumed(run_id, {}, {})
        p = self._r.pipeline(transaction=False)
        p.hmget(self.keys.steps(run_id), list(step_ids))
        p.hmget(self.keys.outputs(run_id), list(step_ids))
        recs, outs = p.execute()
        records: dict[str, str] = {}
        for s, raw in zip(step_ids, recs, strict=True):
            rec = json.loads(raw) if raw else {"status": StepStatus.SUCCEEDED.value}
            rec.update(reused_from=run_id, reason=f"reused from run {run_id}")
            records[s] = json.dumps(rec)
        return Resumed(run_id, records, {s: o for s, o in zip(step_ids, outs, strict=True)
                                         if o is not None})

    def begin_step(self, run_id: str, step_id: str, parents: Sequence[str],
                   ancestors: Sequence[str], reads: Sequence[str], fast: bool,
                   running_patch: dict[str, Any], token: str = "", tag: str = "",
                   lease_s: float = 60.0
                   ) -> tuple[RunRecord, dict[str, StepRun], dict[str, Any], LeaseMode]:
        """One round trip for what a step needs, the lease of this delivery, and on the
        fast path its start.

        Args:
            parents: the step's parents.
            ancestors: other steps whose records the step reads (its condition's).
            reads: steps whose outputs the step reads.
            fast: the step runs iff the run is running and every parent succeeded (no
                condition, no failure handling, a rule such as ``all_success``); then
                the move to ``running`` with ``running_patch`` happens here, atomically.
            token: this delivery's lease token (unique per delivery).
            tag: the broker's delivery tag of the message (for recovery).
            lease_s: how long the lease lasts unless renewed.

        Returns:
            (the run, records of parents, ancestors and the step itself, outputs, what
            this delivery may do: see :class:`LeaseMode`).  Of a run this process began
            a step of before (:attr:`runs_seen`), only the fields that change while it
            runs are read again; its other changing fields are as first read.

        Raises:
            RunNotFound: the run is not in the store.
        """
        k = self.keys
        ids = list(dict.fromkeys([*parents, *ancestors, step_id]))
        known = run_id in self.runs_seen
        raw_run, vals, out_vals, mode = scripts.BEGIN_STEP(
            self._r,
            [k.run(run_id), k.steps(run_id), k.outputs(run_id), k.events(run_id), k.metrics(),
             k.leases(run_id), k.lease_index()],
            [step_id, "1" if fast else "0", _joined(step_sources(StepStatus.RUNNING)),
             json.dumps(running_patch), time.time(), len(parents), len(ids), len(reads),
             token, int(lease_s * 1000), tag, lease_member(run_id, step_id),
             "live" if known else "full", *ids, *reads],
        )
        if not raw_run:
            raise RunNotFound(f"run {run_id!r} is not in the store")
        fields = dict(zip(raw_run[::2], raw_run[1::2], strict=True))
        run = self.runs_seen.fresh(run_id, fields) if known else None
        if run is None:
            if known:  # forgotten since (evicted by another thread): read all of it
                fields = self._r.hgetall(k.run(run_id))
                if not fields:
                    raise RunNotFound(f"run {run_id!r} is not in the store")
            run = RunRecord.from_hash(run_id, fields)
            self.runs_seen.remember(run, fields["input"])
        recs = {s: StepRun.from_json(s, v) for s, v in zip(ids, vals, strict=True)}
        outs = {s: json.loads(v) for s, v in zip(reads, out_vals or [], strict=False)
                if v is not None}
        return run, recs, outs, LeaseMode(int(mode))

    # --- units ---------------------------------------------------------------------------

    def claim_sources(self, run_id: str, units: Sequence[str]) -> list[str]:
        """Claim the units that start with the run; return those claimed now."""
        k = self.keys
        got = scripts.CLAIM_UNITS(self._r, [k.units_claimed(run_id), k.claims(), k.run(run_id)],
                                  [run_id, *units])
        return [str(u) for u in got]

    def complete_unit(self, run_id: str, unit: str, successors: Sequence[str]
                      ) -> tuple[int, list[str]]:
        """Mark a unit finished and advance its successors' counters, atomically.

        Idempotent: a second call for the same unit changes nothing.  A run that is gone
        is not re-created.

        Returns:
            (units still to finish, -1 if the run is gone; successor units this call
            claimed for dispatch).
        """
        done = self.complete_unit_in_band(run_id, unit, successors)
        return done.remaining, done.ready

    def complete_unit_in_band(self, run_id: str, unit: str, successors: Sequence[str]
                              ) -> Completed:
        """:meth:`complete_unit`, and the run's priority (read in the same script: the
        claimed successors are published in its band; ``normal`` when none is claimed)."""
        k = self.keys
        return _completed(scripts.COMPLETE_UNIT(
            self._r,
            [k.counters(run_id), k.units_done(run_id), k.units_claimed(run_id), k.run(run_id),
             k.claims()],
            [unit, run_id, *successors],
        ))

    def unfinished_published(self, run_id: str) -> list[str]:
        """Units of the run that were published and have not completed."""
        k = self.keys
        return sorted(str(u) for u in self._r.sdiff(k.units_published(run_id),
                                                    k.units_done(run_id)))

    def unit_done(self, run_id: str, unit: str) -> bool:
        """True when the unit of the run completed."""
        return bool(self._r.sismember(self.keys.units_done(run_id), unit))

    def stale_claims(self, grace_s: float, limit: int = 100) -> list[tuple[str, str]]:
        """Units claimed more than ``grace_s`` ago and never published (the claimer died
        in between); each is re-armed for another grace period, so one caller gets it.

        Returns:
            (run id, unit id) of each.
        """
        got = scripts.STALE_CLAIMS(self._r, [self.keys.claims()], [int(grace_s * 1000), limit])
        return [split_member(str(m)) for m in got]

    def drop_claims(self, members: Sequence[tuple[str, str]]) -> None:
        """Forget claims (of runs that are gone)."""
        if members:
            self._r.zrem(self.keys.claims(), *(lease_member(r, u) for r, u in members))

    # --- events ----------------------------------------------------------------------------

    def events(self, run_id: str, after: str = "0-0", block_ms: int | None = None,
               count: int = 500) -> list[tuple[str, dict[str, str]]]:
        """Events after the id ``after``; with ``block_ms``, wait that long for new ones."""
        key = self.keys.events(run_id)
        res = self._r.xread({key: after}, count=count, block=block_ms)
        if not res:
            return []
        return [(eid, fields) for eid, fields in res[0][1]]

    # --- metrics and queues ------------------------------------------------------------------

    def metrics(self) -> Metrics:
        """The counters the scripts keep (runs, final step runs, duration histograms)."""
        return Metrics.parse(self._r.hgetall(self.keys.metrics()))

    def queue_lengths(self, queues: Sequence[str]) -> dict[str, int]:
        """Messages waiting in each Celery queue of the broker (``LLEN`` of its list)."""
        if not queues:
            return {}
        p = self._b.pipeline(transaction=False)
        for q in queues:
            p.llen(q)
        return {q: int(n) for q, n in zip(queues, p.execute(), strict=True)}


@dataclass(frozen=True)
class Passed:
    """A queued run that took the concurrency slot an ending run left (:meth:`end_run`)."""

    run_id: str
    version: str
    priority: Priority


_BROKER_COMMANDS = frozenset({"lpush", "publish", "pexpire"})
"""What kombu's Redis transport sends to publish (see :meth:`RunStore.publish_units`)."""


def _broker_commands(commands: Sequence[tuple[str, tuple[Any, ...]]], keys: list[str],
                     args: list[Any]) -> None:
    """Append held broker commands to a script's arguments (name, key or topic, value) and
    the keys they write to its keys.

    Raises:
        ValueError: a command other than ``lpush``, ``publish`` and ``pexpire``.
    """
    for name, cargs in commands:
        if name not in _BROKER_COMMANDS or len(cargs) != 2:
            raise ValueError(f"broker command {name}{cargs!r:.80} cannot be sent by a store "
                             "script: only LPUSH, PUBLISH and PEXPIRE")
        if name != "publish":
            keys.append(cargs[0])
        args += [name, *cargs]


def lease_member(run_id: str, item: str) -> str:
    """The member naming a step (or a unit) of a run in a global index:
    ``<run id>|<item>`` (step and unit ids never contain ``|``)."""
    return f"{run_id}|{item}"


def split_member(member: str) -> tuple[str, str]:
    """``(run id, item)`` of a :func:`lease_member`."""
    run_id, _, item = member.rpartition("|")
    return run_id, item


def _admitted(run_id: str, created: Sequence[Any]) -> tuple[Admission, str]:
    """What ``create_run.lua`` answered: what became of the run, and the holder it
    displaced (or "").

    Raises:
        RunExists: the id was taken.
    """
    code, displaced = int(created[0]), str(created[1] or "")
    if not code:
        raise RunExists(f"run {run_id!r} already exists; use another id, or read it")
    return _ADMISSIONS[code], displaced


def _joined(statuses: Iterable[RunStatus | StepStatus]) -> str:
    """Status names as a script argument: ``","``-joined."""
    return ",".join(s.value for s in statuses)
