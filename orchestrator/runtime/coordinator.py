"""The coordinator: submit, inspect and cancel runs."""

from __future__ import annotations

import contextlib
import re
import uuid
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from celery import Celery

from orchestrator.core import inputschema, payloads
from orchestrator.core.models import WorkflowDef
from orchestrator.core.origin import Origin
from orchestrator.core.plan import ChordNode, walk
from orchestrator.core.priorities import Priority, band_queue
from orchestrator.core.resume import ResumePlan, merge_patch, plan_resume
from orchestrator.core.simulate import Faults
from orchestrator.core.states import RunStatus, StepStatus
from orchestrator.core.subworkflows import SubWorkflowDef
from orchestrator.core.tenants import DEFAULT_TENANT
from orchestrator.core.versions import VersionDiff, diff
from orchestrator.core.waits import Decision, StepNotWaiting, WaitKind, check_key
from orchestrator.errors import (
    DispatchError,
    InputInvalid,
    ResumeRefused,
    RunIdInvalid,
    RunNotFound,
    SettingsInvalid,
    StepNotFound,
    VersionNotFound,
    WorkflowNotFound,
)
from orchestrator.runtime import tracing
from orchestrator.runtime.catalog import Catalog
from orchestrator.runtime.celeryconf import JOIN_TASK, client_app, step_task_name
from orchestrator.runtime.definitions import Definition, Definitions
from orchestrator.runtime.progress import Progress, awaited_runs
from orchestrator.settings import Settings
from orchestrator.store import CallbackRegistry, RunRecord, RunStore, StepRun

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}")
"""What a caller's run id may be (ids the coordinator makes are UUID hex)."""


@dataclass(frozen=True)
class VersionInfo:
    """One stored version of a workflow."""

    version: str
    first_stored: float
    """When a process first stored it (epoch seconds): its first run or compile."""
    current: bool
    """It is the version in this process's catalog."""


@dataclass(frozen=True)
class RunView:
    """A run with its step runs in workflow order."""

    run: RunRecord
    steps: list[StepRun]
    outputs: dict[str, Any]
    callback: dict[str, Any] | None = None
    """The run-end callback's registration and tries, if one was registered."""
    queue_position: int | None = None
    """A ``queued`` run's place among the runs waiting for its concurrency key (1: next)."""
    items: dict[str, dict[str, int]] = field(default_factory=dict)
    """Each expanded map step's items by status (``pending``: not begun), counted in the
    store; the items themselves: :meth:`Coordinator.items`."""


class Coordinator:
    """Validates, compiles and dispatches runs; cancels them; reads their state."""

    def __init__(self, settings: Settings, catalog: Catalog, app: Celery | None = None,
                 store: RunStore | None = None, progress: Progress | None = None) -> None:
        """Args:
            settings: the one settings object.
            catalog: the workflows that can be started by name.
            app: the Celery app that publishes; default a send-only one.
            store: the run store; default one on ``settings.redis_url``.
            progress: the process's run protocol (a worker passes its own, so that the
                process holds one definitions cache); default a new one.
        """
        self.settings = settings
        self.catalog = catalog
        if progress is None:  # a publisher of its own (API, CLI, scheduler): traced if set
            tracing.setup(settings)
            app = app or client_app(settings)
            store = store or RunStore.from_url(settings.redis_target, settings.key_prefix,
                                               settings.run_retention_s,
                                               broker=settings.broker_target)
            progress = Progress(app, store, Definitions(store, settings.max_unit_tasks),
                                settings.default_queue)
        self.progress = progress
        self.app = progress.app
        self.store = progress.store
        self.definitions = progress.definitions
        self.callbacks = CallbackRegistry(self.store.client, self.store.keys,
                                          settings.run_retention_s)
        self._children_stored: set[str] = set()

    def compiled(self, name: str) -> Definition | None:
        """The catalog's workflow ``name`` as this process compiled and stored it (with
        its children's versions), or None if it has not yet (no store access)."""
        wf = self.catalog.workflows.get(name)
        if wf is None or wf.version not in self._children_stored:
            return None
        return self.definitions.cached(wf.version)

    def compile(self, workflow: str | WorkflowDef, version: str | None = None) -> Definition:
        """Compile (once per version) and store a workflow, by name or definition.

        With ``version`` (a name must be given), the stored version of that content hash
        (a unique prefix of at least 6 characters will do), which may be older than the
        catalog's.

        Raises:
            WorkflowNotFound: unknown name.  VersionNotFound: no such stored version of it.
        """
        if version is not None:
            if not isinstance(workflow, str):
                raise TypeError("a version is chosen by workflow name")
            return self.stored(workflow, version)
        wf = self.catalog.get(workflow) if isinstance(workflow, str) else workflow
        d = self.definitions.compile(wf)
        if d.wf.version not in self._children_stored:
            for s in d.wf.steps:  # its children's pinned versions, for the workers
                if s.workflow is not None:
                    have = self.catalog.workflows.get(s.workflow.name)
                    if have is not None and have.version == s.workflow.version:
                        self.compile(have)
            self._children_stored.add(d.wf.version)
        return d

    def child(self, sub: SubWorkflowDef) -> Definition:
        """The definition a sub-workflow step's child run runs: the pinned version (from
        the store, else this process's catalog), or without one the catalog's.

        Raises:
            WorkflowNotFound: no such workflow.  VersionNotFound: the pinned version is
            neither stored nor cataloged here.
        """
        if sub.version is None:
            return self.compile(sub.name)
        try:
            return self.definitions.load(sub.version)
        except RunNotFound:
            have = self.catalog.workflows.get(sub.name)
            if have is not None and have.version == sub.version:
                return self.compile(have)
        raise VersionNotFound(f"version {sub.version} of workflow {sub.name!r} is neither "
                              "stored nor cataloged on this worker. Fix: deploy that version "
                              "of the workflow with the workers, or pin the child again "
                              "(reload the parent's package)")

    def check_input(self, d: Definition, run_input: Any) -> Any:
        """A run's input (None: ``{}``), checked for size and against ``d``'s input schema.

        Raises:
            InputInvalid: it does not match.  RunInputTooLarge: as :meth:`submit`.
        """
        return self._checked_input(d, run_input)

    def versions(self, name: str) -> list[VersionInfo]:
        """Every stored version of workflow ``name``, oldest first (the catalog's
        current version is stored, so listed, once it has been compiled here).

        Raises:
            WorkflowNotFound: no stored version and no cataloged workflow of that name.
        """
        current = self.catalog.workflows.get(name)
        if current is not None:
            self.definitions.compile(current)
        stored = self.store.versions(name)
        if not stored:
            raise WorkflowNotFound(f"no workflow {name!r}: none is cataloged or stored. "
                                   "Fix: `orchestrator list` shows the cataloged ones")
        cur = current.version if current is not None else None
        return [VersionInfo(v, t, v == cur) for v, t in stored]

    def stored(self, name: str, version: str) -> Definition:
        """The stored version of workflow ``name`` whose hash is, or starts with,
        ``version`` (at least 6 characters).

        Raises:
            VersionNotFound: none, several, or a version of another workflow.
        """
        known = [v for v, _ in self.store.versions(name)]
        matches = [v for v in known if v == version] or (
            [v for v in known if v.startswith(version)] if len(version) >= 6 else [])
        if len(matches) != 1:
            listed = ", ".join(known[-5:]) or "none"
            what = "is ambiguous" if matches else "is not a stored version"
            raise VersionNotFound(
                f"{version!r} {what} of workflow {name!r} (newest stored: {listed}). "
                f"Fix: `orchestrator versions {name}` lists them")
        return self.definitions.load(matches[0])

    def diff(self, name: str, old: str, new: str | None = None) -> VersionDiff:
        """What changed from version ``old`` of workflow ``name`` to ``new`` (default
        the catalog's version).

        Raises:
            VersionNotFound, WorkflowNotFound: as :meth:`stored` and :meth:`compile`.
        """
        a = self.stored(name, old).wf
        b = self.stored(name, new).wf if new is not None else self.compile(name).wf
        return diff(a, b)

    def workers(self, timeout_s: float = 1.0
                ) -> tuple[dict[str, list[str]], dict[str, list[dict[str, Any]]]]:
        """Ask the live workers (Celery remote control) which tasks they registered and
        which queues they consume: ``(registered, active_queues)`` by worker name."""
        insp = self.app.control.inspect(timeout=timeout_s)
        return insp.registered() or {}, insp.active_queues() or {}

    def preflight(self, workflow: str | WorkflowDef, timeout_s: float = 1.0,
                  workers: tuple[dict[str, list[str]], dict[str, list[dict[str, Any]]]]
                  | None = None, priority: Priority = Priority.NORMAL) -> list[str]:
        """Check that live workers can run every step; return the problems (empty: ok).

        Each step's task must be registered on a worker that consumes the step's queue,
        and some worker must consume the queue of join tasks (both in the band of
        ``priority``: a worker consumes every band of its queues unless it was started
        on one band alone).

        Args:
            workers: what :meth:`workers` answered (asked now when None).
            priority: the priority of the run to be started.
        """
        d = self.compile(workflow)
        registered, active = workers if workers is not None else self.workers(timeout_s)
        if not registered:
            return ["no worker answered; start one with `orchestrator worker` "
                    f"(queues: {', '.join(sorted(self._queues(d)))})"]
        band = partial(band_queue, priority=priority)
        consumes = {w: {q["name"] for q in qs} for w, qs in active.items()}
        needs: dict[tuple[str, str], list[str]] = {}
        for step in d.wf.steps:
            key = (step_task_name(step.function),
                   band(d.queue(step.id, self.settings.default_queue)))
            needs.setdefault(key, []).append(step.id)
        if any(isinstance(n, ChordNode) for u in d.plan.units for n in walk(u.canvas)):
            needs.setdefault((JOIN_TASK, band(self.settings.default_queue)),
                             []).append("(joins)")
        problems = []
        for (task, queue), steps in needs.items():
            ok = [w for w, tasks in registered.items()
                  if task in tasks and queue in consumes.get(w, set())]
            if not ok:
                with_task = sorted(w for w, tasks in registered.items() if task in tasks)
                on_queue = sorted(w for w, qs in consumes.items() if queue in qs)
                problems.append(
                    f"steps {', '.join(steps)}: no live worker both registers task {task!r} "
                    f"and consumes queue {queue!r} (workers with the task: "
                    f"{', '.join(with_task) or 'none'}; consuming the queue: "
                    f"{', '.join(on_queue) or 'none'}). Fix: start `orchestrator worker "
                    f"--queues {queue}` with the package defining the step function in "
                    "ORCH_WORKFLOW_PACKAGES.")
        return problems

    def _queues(self, d: Definition) -> set[str]:
        return {d.queue(s.id, self.settings.default_queue) for s in d.wf.steps}

    def submit(self, workflow: str | WorkflowDef, run_input: Any = None,
               run_id: str | None = None, preflight: bool = False,
               origin: Origin | None = None, version: str | None = None,
               faults: Faults | None = None, priority: Priority = Priority.NORMAL) -> str:
        """Start a run and return its id.

        Args:
            workflow: a cataloged workflow's name, or a validated definition.
            run_input: JSON data, checked against the workflow's input schema.
            run_id: an explicit id (for idempotent submission); default a new UUID.
            preflight: first check that live workers can run every step (see
                :meth:`preflight`), instead of letting a run wait for a missing worker.
            origin: what started the run (default: a Python caller), recorded with it.
            version: run this stored version of the named workflow (see :meth:`stored`)
                instead of the catalog's.
            faults: faults the workers inject into its step runs (tests only: needs
                ``Settings.fault_injection``; see :mod:`orchestrator.core.simulate`).
            priority: the band of queues its tasks go to: a ``high`` run's steps overtake
                queued ``normal`` and ``low`` ones (see :mod:`orchestrator.core.priorities`).

        Raises:
            WorkflowNotFound: unknown name.  VersionNotFound: unknown version.
            InputInvalid: input does not match.  RunInputTooLarge: the input is larger
            than ``Settings.run_input_max_bytes`` as JSON.
            DispatchError: the preflight check found steps no live worker can run.
            RunExists: ``run_id`` is taken.  RunIdInvalid: ``run_id`` is empty or malformed.
            StoreSchemaMismatch: the store has a schema this release does not use.
            StoreIsCluster: the store's (or the broker's) Redis is a Redis Cluster node.
        """
        self.store.check_schema()
        d = self.compile(workflow, version)
        if faults and not self.settings.fault_injection:
            raise SettingsInvalid("this coordinator injects no faults: fault injection is "
                                  "for tests. Fix: set ORCH_FAULT_INJECTION=true (on the "
                                  "workers too), or submit without faults")
        if faults:
            faults.check(d.wf)
        if preflight:
            problems = self.preflight(d.wf, priority=priority)
            if problems:
                raise DispatchError(f"workflow {d.wf.name!r} cannot run now:\n  - "
                                    + "\n  - ".join(problems))
        data = self._checked_input(d, run_input)
        if run_id is not None and not RUN_ID.fullmatch(run_id):
            raise RunIdInvalid(f"run id {run_id[:80]!r} is not valid: it must be 1 to 200 "
                               "letters, digits or . _ : @ - , starting with a letter or "
                               "digit. Fix: pass such an id, or none for a new one")
        rid = run_id or uuid.uuid4().hex
        self.progress.start(d, rid, data, origin,
                            faults=faults.to_json() if faults else None, priority=priority)
        return rid

    def _checked_input(self, d: Definition, run_input: Any) -> Any:
        """The run input (None: ``{}``), checked for size and against the input schema."""
        data = {} if run_input is None else run_input
        payloads.check_input(data, self.settings.run_input_max_bytes, d.wf.name)
        errors = inputschema.problems(d.wf, data)  # the validator is built once per version
        if errors:
            lines = "; ".join(errors)
            raise InputInvalid(f"input of workflow {d.wf.name!r} is invalid: {lines}. "
                               "Fix the input to match the workflow's input_schema.")
        return data

    def resume(self, run_id: str, from_step: str | None = None,
               input_patch: Any = None, version: str | None = None,
               origin: Origin | None = None) -> tuple[str, ResumePlan]:
        """Start a new run that resumes run ``run_id`` (see :mod:`orchestrator.core.resume`):
        the succeeded steps that are not downstream of ``from_step`` or of a step that did
        not succeed keep their recorded outputs; the rest run.

        Args:
            run_id: an ended run (failed, cancelled, or succeeded with ``from_step``).
            from_step: run this step and everything downstream of it again.
            input_patch: a JSON Merge Patch (RFC 7386) applied to the run's input; the
                result is checked against the input schema.
            version: run a newer stored version of the workflow (a prefix of 6+
                characters will do); refused if a step it would reuse changed in it.
            origin: who resumes (its tenant is replaced by the resumed run's).

        Returns:
            The new run's id and what it reuses and runs again.

        Raises:
            RunNotFound: no such run.  ResumeRefused: the run is still going, ``from_step``
            is unknown, or reused steps changed in ``version``.  VersionNotFound,
            InputInvalid, RunInputTooLarge: as :meth:`submit`.
        """
        self.store.check_schema()
        old = self.store.run(run_id)
        if not old.status.terminal:
            raise ResumeRefused(f"run {run_id!r} is {old.status.value}: only a run that "
                                "ended can be resumed. Fix: wait for it to end, or cancel "
                                f"it (`orchestrator cancel {run_id}`) and resume then")
        was = self.definitions.load(old.version)
        d = self.stored(old.workflow, version) if version is not None else was
        statuses = {s: r.status for s, r in self.store.step_runs(run_id).items()}
        if old.status is RunStatus.SUCCEEDED and from_step is None:
            raise ResumeRefused(f"run {run_id!r} succeeded: there is nothing to resume. "
                                "Fix: name the step to run again with --from STEP")
        plan = plan_resume(was.wf, statuses, from_step, d.wf)
        data = self._checked_input(d, merge_patch(old.input, input_patch)
                                   if input_patch is not None else old.input)
        origin = (origin or Origin()).model_copy(update={
            "tenant": None if old.tenant == DEFAULT_TENANT else old.tenant})
        rid = uuid.uuid4().hex
        self.progress.start(d, rid, data, origin, self.store.reusable(run_id, plan.reuse),
                            priority=old.priority)  # the resumed run keeps its band
        return rid, plan

    def send_event(self, key: str, data: Any, event_id: str | None = None,
                   by: str = "", tenant: str = DEFAULT_TENANT) -> tuple[str, bool, int]:
        """Send an event for ``key`` (durable waits): every step waiting for it resumes
        with ``data`` as its output; a step that starts waiting for it within
        ``Settings.event_retention_s`` still gets it.

        Args:
            event_id: the event's id (default a new one); the same id sent twice in a
                row is one event.
            by: who sent it (the CLI's user, the API token's name).
            tenant: whose event it is: only the steps of this tenant's runs get it.

        Returns:
            (the event id, False if it repeated the latest one, steps resumed).

        Raises:
            WaitError: ``key`` cannot name events.
        """
        check_key(key)
        return self.progress.waits.send_event(key, data, event_id, by,
                                              self.settings.event_retention_s, tenant)

    def decide(self, run_id: str, step_id: str, approve: bool, comment: str = "",
               by: str = "") -> None:
        """Approve or reject a step that waits for approval; recorded with ``comment`` and
        ``by`` (who decided).  A rejection fails the step (its failure path runs).

        Raises:
            RunNotFound: no such run.  StepNotWaiting: the step does not wait for a
            decision now (unknown, not yet waiting, ended, or decided already).
        """
        run = self.store.run(run_id)
        step = self.definitions.load(run.version).wf.step_map.get(step_id)
        if step is None:
            raise StepNotWaiting(f"run {run_id!r} has no step {step_id!r}; give one of "
                                 "its steps (`orchestrator status RUN_ID` lists them)")
        if step.wait is None or step.wait.kind is not WaitKind.APPROVAL:
            raise StepNotWaiting(f"step {step_id!r} of run {run_id!r} is no approval step; "
                                 "approve the workflow's approval step (wait kind "
                                 "'approval')")
        decision = Decision.APPROVED if approve else Decision.REJECTED
        code, status = self.progress.waits.decide(run_id, step_id, decision.value, comment,
                                                  by)
        if code == -1:
            raise RunNotFound(f"run {run_id!r} is not in the store")
        if code == 2:
            raise StepNotWaiting(f"step {step_id!r} of run {run_id!r} was decided "
                                 "already; read the decision with `orchestrator status`")
        if code != 1:
            raise StepNotWaiting(f"step {step_id!r} of run {run_id!r} does not wait for "
                                 f"approval (it is {status.value}); approve an approval "
                                 "step while `orchestrator status` shows it waiting")

    def view(self, run_id: str, version: str | None = None) -> RunView:
        """The run and every step run (pending ones included), in workflow order.

        ``version``: the run's version when the caller knows it (it has just submitted
        the run): the run, its step runs, their outputs and its callback are then read
        in one round trip instead of four.
        """
        if version is not None:
            d = self.definitions.load(version)
            ids = [s.id for s in d.wf.steps]
            run, recs, outs, callback = self.store.snapshot(run_id, ids)
            if run.version == version:
                return self.assemble(d, run, recs, outs, callback)
        run = self.store.run(run_id)
        d = self.definitions.load(run.version)
        ids = [s.id for s in d.wf.steps]  # a map's items are not read here: see items()
        recs = self.store.step_runs(run_id, ids)
        return self.assemble(d, run, recs, self.store.outputs(run_id, ids),
                             self.callbacks.get(run_id))

    def assemble(self, d: Definition, run: RunRecord, recs: dict[str, StepRun],
                 outs: dict[str, Any], callback: dict[str, Any] | None) -> RunView:
        """The view of a run of ``d`` from what the store holds of it (the parts of
        ``RunStore.snapshot``); a ``queued`` run's place in its queue is read here."""
        run_id = run.run_id
        steps = [recs.get(s.id, StepRun(s.id, StepStatus.PENDING)) for s in d.wf.steps]
        position = self.store.queue_position(run_id) \
            if run.status is RunStatus.QUEUED else None
        items = {}
        for s in d.wf.steps:
            if s.map is not None and recs[s.id].map is not None:
                _, by = self.progress.maps.counts(run_id, s.id)
                items[s.id] = {st.value: n for st, n in by.items()}
        return RunView(run, steps, outs, callback, position, items)

    def items(self, run_id: str, step_id: str, start: int = 0, stop: int | None = None
              ) -> tuple[list[StepRun], dict[str, Any]]:
        """The items ``start`` to ``stop`` (exclusive) of map step ``step_id``: their step
        runs (``pending`` when not begun) and the outputs of those that have one.

        Raises:
            RunNotFound: no such run.  StepNotFound: the run's workflow has no map step
            ``step_id``.
        """
        run = self.store.run(run_id)
        step = self.definitions.load(run.version).wf.step_map.get(step_id)
        if step is None or step.map is None:
            raise StepNotFound(f"run {run_id!r} has no map step {step_id!r}; name one of "
                               "its map steps (`orchestrator status RUN_ID` shows them with "
                               "their item counts)")
        return self.progress.maps.items(run_id, step_id, start, stop)

    def cancel(self, run_id: str, compensate: bool = False) -> bool:
        """Cancel a run: pending steps never start, running ones are revoked.

        With ``compensate``, the run is unwound instead (``compensating``): pending steps
        never start, running ones finish (so that what they did can be undone), then the
        compensations of every succeeded step run, as when a run fails
        (:mod:`orchestrator.core.compensation`).

        Returns:
            True if the run was cancelled now; False if it had already ended (or is
            already being unwound).
        """
        if compensate:
            return self._cancel_compensating(run_id)
        return self.progress.cancel(run_id)

    def _cancel_compensating(self, run_id: str) -> bool:
        if not self.store.transition_run(run_id, RunStatus.COMPENSATING,
                                         compensation_cause="cancelled"):
            return False
        # read after the move: a step not running now never starts (the run is no longer
        # running); a running one is left to finish, since what it does may need undoing
        records = list(self.store.step_runs(run_id).values())
        running = {r.step_id for r in records if r.status is StepStatus.RUNNING}
        d = self.definitions.load(self.store.run(run_id).version)
        for s in d.wf.steps:
            if s.id not in running:
                self.store.transition_step(run_id, s.id, StepStatus.CANCELLED,
                                           reason="run cancelled with compensation")
        self.progress.waits.end(run_id, [r for r in records
                                         if r.status is StepStatus.WAITING])
        for child in awaited_runs(records):  # its child runs unwind too
            with contextlib.suppress(RunNotFound):
                self.cancel(child, compensate=True)
        self.progress.compensate(run_id)  # now if nothing runs; else when it has ended
        return True
