"""Concurrency slots of steps in the store (:mod:`orchestrator.core.concurrency`): a step
run takes a slot of its key before it starts, or waits for one in the store.

The slot is given up by the step run's final transition (``lua/step_transition.lua``,
which passes it to the oldest waiter and makes that waiter's held message due); a
workflow's slots are taken and given up by the run scripts (``lua/create_run.lua``,
``lua/run_transition.lua``).
"""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Any

from orchestrator.core.concurrency import Slot
from orchestrator.store import scripts
from orchestrator.store.keys import Keys
from orchestrator.store.runs import lease_member


class Taken(IntEnum):
    """What :meth:`Slots.acquire` answered."""

    HELD = 1
    """The step run holds a slot: it starts."""
    WAITING = 2
    """Every slot is held: it waits in the store; its task ends without going on."""
    FULL = 3
    """Every slot is held and ``when_full`` is ``cancel_newest``: it ends cancelled."""
    FENCED = -2
    """This delivery no longer holds the step run's lease."""


def slot_timer_id(run_id: str, step_id: str, token: str) -> str:
    """The timer id of a step run waiting for a slot, one per delivery (``token``), as a
    throttled one's: the reaper forgets a timer after publishing it, by id."""
    return f"slot:{lease_member(run_id, step_id)}:{token}"


class Slots:
    """Step slots on one Redis client (decoded responses)."""

    def __init__(self, client: Any, keys: Keys) -> None:
        self._r = client
        self.keys = keys

    def acquire(self, run_id: str, step_id: str, slot: Slot, token: str,
                message: dict[str, Any], ttl_s: int) -> Taken:
        """Take a slot of ``slot``'s key for the step run (``lua/acquire_slot.lua``), or
        hold its task ``message`` (a signature's dict, with its chain and chord) in the
        store until a slot passes to it.

        Args:
            token: the delivery's lease token (it must hold the lease).
            ttl_s: how long the held message is kept at most (the run's retention).
        """
        k = self.keys
        timer_id = slot_timer_id(run_id, step_id, token)
        got = scripts.ACQUIRE_SLOT(
            self._r,
            [k.concurrency_holders(slot.scope), k.concurrency_queue(slot.scope),
             k.slots(run_id), k.steps(run_id), k.leases(run_id), k.lease_index(),
             k.timers(), k.timer(timer_id)],
            [step_id, lease_member(run_id, step_id), slot.limit, slot.when_full, token,
             timer_id, json.dumps(message), ttl_s, slot.waiting])
        return Taken(int(got))

    def holders(self, scope: str) -> list[str]:
        """What holds a slot of ``scope`` now, oldest first."""
        return [str(m) for m in self._r.zrange(self.keys.concurrency_holders(scope), 0, -1)]

    def waiting(self, scope: str) -> int:
        """How many wait for a slot of ``scope``."""
        return int(self._r.llen(self.keys.concurrency_queue(scope)))
