"""Starting a run on the API's event loop: :meth:`Coordinator.submit`'s two scripts
(``create_run``, ``publish_units``) and the answer's read, on the API's asyncio client,
with no worker thread.

Why: measured with ``python -m bench.api`` (``docs/benchmarks.md``), handing each submit
to a worker thread cost more API CPU than the submit itself: the event loop and the
thread take the GIL from each other at every Redis round trip.  This path covers the
common submit and leaves the rest to :meth:`Coordinator.submit` in a thread:
:meth:`AsyncSubmitter.ready` says which.
"""

from __future__ import annotations

from typing import Any

import anyio

from orchestrator.core.origin import Origin
from orchestrator.core.priorities import Priority
from orchestrator.runtime import broker
from orchestrator.runtime.coordinator import Coordinator, RunView
from orchestrator.runtime.definitions import Definition


class AsyncSubmitter:
    """Submits and reads runs of ``coordinator``'s catalog on ``aclient``, a
    ``redis.asyncio`` client of the same store (decoded responses; the API reader's pool
    of short commands)."""

    def __init__(self, coordinator: Coordinator, aclient: Any) -> None:
        self.coordinator = coordinator
        self.aclient = aclient

    def ready(self, name: str) -> Definition | None:
        """The definition to start a run of the catalog's workflow ``name`` by on the
        event loop, or None when the run must be started by :meth:`Coordinator.submit`
        (in a thread), which is when:

        * this process has not yet checked the store's schema, or compiled and stored
          the workflow (its first submit does both);
        * the workflow has a concurrency limit (a run takes a slot as it is created, and
          a full key may queue it or cancel another run);
        * the broker is not one plain Redis (on Sentinel a publish takes three steps).
        """
        c = self.coordinator
        if not c.store.schema_checked or not broker.captures(c.app):
            return None
        d = c.compiled(name)
        if d is None or d.wf.concurrency is not None:
            return None
        return d

    async def submit(self, d: Definition, run_input: Any, run_id: str,
                     origin: Origin | None = None,
                     priority: Priority = Priority.NORMAL) -> None:
        """Start run ``run_id`` of ``d`` (from :meth:`ready`) with ``run_input``: check
        the input, create the run, claim and publish its source units, as
        :meth:`Coordinator.submit` does.  Once begun, the two scripts run to the end
        even if the caller is cancelled (a run created and left unpublished would wait
        for the stalled-run replay).

        Raises:
            InputInvalid, RunInputTooLarge: as :meth:`Coordinator.submit`.
            RunExists: ``run_id`` is taken.
        """
        c = self.coordinator
        data = c.check_input(d, run_input)
        with anyio.CancelScope(shield=True):
            await c.store.acreate_run(self.aclient, run_id, d.wf, d.plan, data, origin,
                                      priority)
            held = c.progress.held(d, run_id, d.plan.sources, priority)
            await c.store.apublish_units(self.aclient, run_id, held, claim=True)

    async def view(self, d: Definition, run_id: str) -> RunView:
        """The run ``run_id`` of ``d`` (one round trip), as :meth:`Coordinator.view`.

        Raises:
            RunNotFound: no such run.  RunDamaged: as :meth:`Coordinator.view`.
        """
        c = self.coordinator
        run, recs, outs, callback = await c.store.asnapshot(
            self.aclient, run_id, [s.id for s in d.wf.steps])
        return c.assemble(d, run, recs, outs, callback)
