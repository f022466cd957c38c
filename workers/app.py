"""The workers' Celery app: built from the one settings object."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from celery import Celery
from celery.signals import celeryd_after_setup

from orchestrator import forks
from orchestrator.core.origin import Origin, OriginKind
from orchestrator.core.priorities import Priority, band_of, band_queues, parse_priority
from orchestrator.core.registry import StepFunction
from orchestrator.errors import (
    InputInvalid,
    OrchestratorError,
    RunExists,
    RunIdInvalid,
    WorkflowNotFound,
)
from orchestrator.runtime import broker, tracing
from orchestrator.runtime.catalog import discover, limits_of
from orchestrator.runtime.celeryconf import (
    JOIN_TASK,
    SUBMIT_TASK,
    celery_config,
    send_only_backend_url,
    step_task_name,
)
from orchestrator.runtime.coordinator import Coordinator
from orchestrator.runtime.definitions import Definitions
from orchestrator.runtime.progress import Progress
from orchestrator.settings import Settings
from orchestrator.store import RunStore, StoreError
from orchestrator.store.connection import is_sentinel_url
from orchestrator.store.submissions import RejectedSubmission, Submissions
from workers import items, logs
from workers import step as step_mod
from workers.leases import LeaseKeeper

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Celery:
    """Build the worker app: config, runtime, one task per step function, the join task.

    Importing the configured workflow packages registers their step functions; each gets
    a task named ``step.<function name>``.  The worker's log lines name the run, step and
    attempt, as text or JSON (``settings.log_format``, see :mod:`workers.logs`).
    """
    settings = settings or Settings()
    logs.install(settings.log_format)
    # pool processes forked while a keeper thread holds a lock find it released
    forks.install()
    catalog = discover(settings.workflow_packages, limits=limits_of(settings))
    app = Celery("orchestrator", set_as_current=True)
    app.conf.update(celery_config(settings))
    app.conf.result_backend = send_only_backend_url(settings.backend_target.url)
    # acknowledgements that survive a Redis restart (see orchestrator.runtime.broker)
    app.conf.broker_transport = (broker.WORKER_SENTINEL_TRANSPORT
                                 if is_sentinel_url(settings.broker_target.url)
                                 else broker.WORKER_TRANSPORT)
    store = RunStore.from_url(settings.redis_target, settings.key_prefix,
                              settings.run_retention_s, broker=settings.broker_target)
    progress = Progress(app, store, Definitions(store, settings.max_unit_tasks),
                        settings.default_queue, lease_s=settings.lease_s)
    coordinator = Coordinator(settings, catalog, progress=progress)
    step_mod.install(progress, settings, coordinator)
    app.steps["worker"].add(LeaseKeeper)
    tracing.setup_worker(settings)  # traces, when ORCH_OTEL_ENDPOINT is set
    submit_queue = settings.submit_queue

    @celeryd_after_setup.connect(weak=False)
    def _consume_bands(sender: Any, instance: Any, **_: Any) -> None:
        """Every worker consumes each band of its queues (-Q ``default`` also reads
        ``default.high`` and ``default.low``: see :mod:`orchestrator.core.priorities`;
        -Q ``default.high`` reads that band alone), and the submission queue too,
        whatever its -Q."""
        queues = instance.app.amqp.queues
        for name in list(queues.consume_from):
            if name != submit_queue and band_of(name)[1] is Priority.NORMAL:
                for band in band_queues(name):
                    queues.select_add(band)
        if submit_queue:
            queues.select_add(submit_queue)

    for fn in list(catalog.registry.functions.values()):
        _register_step(app, fn)

    @app.task(name=JOIN_TASK, bind=True, acks_late=True, reject_on_worker_lost=True,
              ignore_result=True, Request=step_mod.StepRequest)
    def join(self: Any, run_id: str, join_id: str, version: str) -> dict[str, Any]:
        """Closes a fan-out; when it ends its unit, advances the run."""
        return _join(self, run_id, join_id, version)

    submissions = Submissions(store.client, store.keys)

    @app.task(name=SUBMIT_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
    def submit(self: Any, workflow: Any = None, input: Any = None, run_id: Any = None,
               origin: Any = None, priority: Any = None, **extra: Any) -> dict[str, Any]:
        """Start a run from any Celery client: ``send_task("orchestrator.submit", ...)``.

        Pass ``run_id`` to make the submission idempotent: a redelivered or repeated
        message with the same id starts the run once.  ``origin`` (see
        :class:`~orchestrator.core.origin.Origin`) says what started it; default
        ``broker``.  ``priority``: ``high``, ``normal`` (default) or ``low``, the band of
        queues the run's steps go to.  A submission that starts no run (unknown workflow,
        bad input, run id or priority, unknown arguments) fails the task and is recorded
        as rejected
        (``orchestrator rejected``, ``GET /v1/submissions/rejected``).
        """
        try:
            if extra:
                raise InputInvalid(f"unknown arguments {sorted(extra)}: orchestrator.submit "
                                   "takes workflow, input, run_id, origin and priority")
            if not isinstance(workflow, str) or not workflow:
                raise WorkflowNotFound("no workflow named: pass workflow=<name> (a string)")
            if run_id is not None and not isinstance(run_id, str):
                raise RunIdInvalid(f"run_id must be a string, not {type(run_id).__name__}")
            try:
                how = (Origin.model_validate(origin) if origin
                       else Origin(kind=OriginKind.BROKER))
            except ValueError as exc:
                raise InputInvalid(f"origin is not valid: {exc}") from None
            try:
                band = parse_priority(str(priority) if priority is not None else None)
            except ValueError as exc:
                raise InputInvalid(f"{exc}. Fix: pass priority='high', 'normal' or 'low', "
                                   "or none") from None
            return {"run_id": coordinator.submit(workflow, input, run_id=run_id, origin=how,
                                                 priority=band),
                    "created": True}
        except RunExists:
            return {"run_id": run_id, "created": False}
        except OrchestratorError as exc:
            rec = RejectedSubmission(
                at=time.time(), workflow=workflow if isinstance(workflow, str) else None,
                run_id=run_id if isinstance(run_id, str) else None,
                code=_snake(type(exc).__name__), reason=str(exc)[:2000],
                task_id=self.request.id, sender=getattr(self.request, "origin", None))
            try:
                submissions.reject(rec)
            except StoreError:
                log.warning("could not record the rejected submission %s", self.request.id)
            raise

    return app


def _snake(name: str) -> str:
    """``WorkflowNotFound`` -> ``workflow_not_found``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


_step = step_mod.requeue_when_unrecorded(step_mod.execute)
_item = step_mod.requeue_when_unrecorded(items.execute)
_join = step_mod.requeue_when_unrecorded(step_mod.join)


def _register_step(app: Celery, fn: StepFunction) -> None:
    def run(self: step_mod.StepTask, run_id: str, step_id: str, version: str
            ) -> dict[str, Any]:
        if step_id.endswith("]"):  # a map step's item, fetch[17]
            return _item(self, run_id, step_id, version)
        return _step(self, run_id, step_id, version)

    run.__doc__ = fn.fn.__doc__
    app.task(name=step_task_name(fn.name), bind=True, base=step_mod.StepTask,
             function=fn)(run)
