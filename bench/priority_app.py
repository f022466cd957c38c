"""``celery -A bench.priority_app worker``: the worker app with the queue order strategy
of ``BENCH_QUEUE_ORDER`` (e.g. kombu's ``round_robin``) instead of ours."""

from __future__ import annotations

import os

from orchestrator.runtime.celeryconf import PRIORITY_CYCLE
from workers.main import app

app.conf.broker_transport_options = {
    **app.conf.broker_transport_options,
    "queue_order_strategy": os.environ.get("BENCH_QUEUE_ORDER", PRIORITY_CYCLE),
}
