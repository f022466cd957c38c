"""Starting a run on the API's event loop: :meth:`Coordinator.submit`'s two scripts
(``create_run``, then ``publish_units`` with the answer's read in the same round trip), on
the API's asyncio client, with no worker thread.

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
from orchestrator.runtime.coordinator import Coordinator, RunView
from orchestrator.runtime.definitions import Definition


class AsyncSubmitter:
    """Submits and reads runs of ``coordinator``'s catalog on ``aclient``, a
    ``redis.asyncio`` client of the same store (decoded responses; the API reader's pool
    of short commands)."""

    def __init__(self, coordinator: Coordinator, aclient: Any) -> None:
        self.coordinator = coordinator
        self.aclient = aclient

    def ready(self, name: str, priority: Priority = Priority.NORMAL) -> Definition | None:
        """The definition to start a run of the catalog's workflow ``name`` in band
        ``priority`` by on the event loop, or None when the run must be started by
        :meth:`Coordinator.submit` (in a thread), which is when:

        * this process has not yet checked the store's schema, or compiled and stored
          the workflow (its first submit does both);
        * the messages of its source units in this band are not all rendered from
          templates this process holds: Celery would build them, which for the first
          publish of a wide version takes seconds of CPU, too long to hold the loop (the
          thread path builds the templates; with traces on, none are kept);
        * the workflow has a concurrency limit (a run takes a slot as it is created, and
          a full key may queue it or cancel another run);
        * the broker is not one plain Redis (on Sentinel a publish takes three steps;
          no templates are kept then either, so the template check above says it).
        """
        c = self.coordinator
        if not c.store.schema_checked:
            return None
        d = c.compiled(name)
        if d is None or d.wf.concurrency is not None \
                or not c.progress.warm(d, d.plan.sources, priority):
            return None
        return d

    async def submit(self, d: Definition, run_input: Any, run_id: str,
                     origin: Origin | None = None, priority: Priority = Priority.NORMAL,
                     read: bool = True) -> RunView | None:
        """Start run ``run_id`` of ``d`` (from :meth:`ready`) with ``run_input``: check
        the input, create the run, claim and publish its source units, as
        :meth:`Coordinator.submit` does, in two round trips; with ``read``, the second
        also reads the run back (as :meth:`Coordinator.view`, after the publish).  Once
        begun, this runs to the end even if the caller is cancelled: a run created and
        left unpublished would wait for the stalled-run replay.

        Returns:
            The run as it is after the publish (None without ``read``).

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
            _, snap = await c.store.apublish_units(
                self.aclient, run_id, held, claim=True,
                step_ids=[s.id for s in d.wf.steps] if read else None)
        return None if snap is None else c.assemble(d, *snap)
