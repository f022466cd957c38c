"""What every worker process shares: settings, store, dispatcher and registry."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.core.registry import Registry
from orchestrator.runtime.progress import Dispatcher
from orchestrator.settings import Settings
from orchestrator.store.runs import RunStore


@dataclass
class Runtime:
    """Built once by :func:`workers.app.create_app`."""

    settings: Settings
    store: RunStore
    dispatcher: Dispatcher
    registry: Registry
