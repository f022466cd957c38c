"""A workflow and its event triggers (two webhooks, one stream), for the trigger tests.

The step function counts its own executions in a Redis list (``EXECUTIONS``): a test
checks that each event ran the workflow once, whatever was replayed or killed.
"""

from __future__ import annotations

import json

from orchestrator.core.dsl import Workflow
from orchestrator.core.registry import step_function
from orchestrator.core.triggers import StreamSource, WebhookScheme, WebhookSource
from orchestrator.runtime.context import current

EXECUTIONS = "test:trigger:executions"
STREAM = "test:orders"


@step_function("test.take_order")
def take_order(order_id: str) -> str:
    """Record one execution (run id and order id), return the order id."""
    ctx = current()
    ctx.redis.rpush(EXECUTIONS, json.dumps({"run_id": ctx.run_id, "order_id": order_id}))
    return order_id


_w = Workflow("triggered_order", input_schema={
    "type": "object", "required": ["order_id"],
    "properties": {"order_id": {"type": "string"}}})
_w.step("take", take_order, order_id=_w.input.order_id)
triggered_order = _w.build()

hook_std = _w.trigger(
    "hook_std", WebhookSource(scheme=WebhookScheme.STANDARD),
    filter='event.type == "order.created"', input='{"order_id": event.data.order_id}')
hook_gh = _w.trigger(
    "hook_gh", WebhookSource(scheme=WebhookScheme.GITHUB),
    filter='headers["x-github-event"] == "push"', input='{"order_id": event.after}')
orders_stream = _w.trigger(
    "orders_stream", StreamSource(stream=STREAM), input='{"order_id": event.order_id}')
