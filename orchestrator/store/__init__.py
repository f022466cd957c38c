"""The run store: every Redis key and script of run data, behind one interface.

* :class:`RunStore` (``runs.py``): runs, step runs, outputs, unit counters, events,
  metrics; the Lua scripts (``lua/*.lua``, loaded by ``scripts.py``).
* :class:`AsyncRunReader` (``reader.py``): the API's asyncio reads and idempotency keys.
* :class:`CallbackRegistry` (``callbacks.py``): run-end callback registrations.
* :class:`~orchestrator.store.waits.WaitStore` (``waits.py``): durable waits (parked
  steps, events by key, approval decisions).
* ``keys.py`` builds every key; ``fields.py`` names every event and metric field;
  ``records.py`` holds the records handed out.
"""

from redis.exceptions import RedisError as StoreError

from orchestrator.store.callbacks import CallbackRegistry
from orchestrator.store.fields import Event, Metrics
from orchestrator.store.keys import Keys
from orchestrator.store.reader import AsyncRunReader
from orchestrator.store.records import RunRecord, StepRun
from orchestrator.store.runs import RunStore

__all__ = ["AsyncRunReader", "CallbackRegistry", "Event", "Keys", "Metrics", "RunRecord",
           "RunStore", "StepRun", "StoreError"]

# StoreError: any failure to reach or use Redis (redis-py's RedisError), so that code
# outside this package catches store failures without importing redis itself.
