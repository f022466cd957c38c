"""Celery configuration from the settings: the same for the coordinator and the workers.

Choices follow ``shared/notes/celery-on-redis.md`` §3.5: JSON only, late acks with
requeue on a lost worker, prefetch 1, explicit visibility timeout, events on for Flower.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, states
from celery.backends.redis import RedisBackend, SentinelBackend

from orchestrator.runtime import broker
from orchestrator.settings import Settings
from orchestrator.store.connection import celery_transport_options, is_sentinel_url

JOIN_TASK = "orchestrator.join"
SUBMIT_TASK = "orchestrator.submit"
STEP_TASK_PREFIX = "step."
PRIORITY_CYCLE = "orchestrator.core.priorities:BandCycle"
"""kombu's ``queue_order_strategy`` for the bands of priorities (a class by path)."""


def step_task_name(function: str) -> str:
    """The Celery task name of a step function: ``step.<function name>``."""
    return STEP_TASK_PREFIX + function


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings dict for ``settings``."""
    vt = settings.visibility_timeout_s
    transport = {
        "visibility_timeout": vt,
        "socket_keepalive": True,
        "socket_timeout": 30,
        "socket_connect_timeout": 10,
        "health_check_interval": 25,
        # kombu 5.7: sweep unacked messages every 10 s instead of about every 100 s
        "unacked_restore_interval": max(1, min(10, vt // 2)),
        "unacked_restore_throttle": 1,
        # priorities: a run's band of queues goes first by weighted turns, none starves
        "queue_order_strategy": PRIORITY_CYCLE,
    }
    # a Sentinel URL: the group's name and the Sentinels' password (none for one server)
    transport.update(celery_transport_options(settings.broker_target))
    sentinel = celery_transport_options(settings.backend_target)
    return {
        # the queues on the broker's Redis (the store's unless ORCH_BROKER_URL names
        # another); Celery's results and chord counters with the store (with the broker
        # when the store is a Redis Cluster: Celery's backend does not speak Cluster)
        "broker_url": settings.broker_target.url,
        broker.APART: settings.broker_apart,
        "result_backend": settings.backend_target.url,
        "broker_transport_options": transport,
        "result_backend_transport_options": {"visibility_timeout": vt, **sentinel},
        "visibility_timeout": vt,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "broker_connection_retry_on_startup": True,
        "result_expires": settings.result_expires_s,
        "result_backend_always_retry": True,
        "result_backend_max_retries": 10,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        # step and join tasks keep no result (the run store has it); failures still do
        "task_store_errors_even_if_ignored": True,
        "task_default_queue": settings.default_queue,
        # our own senders route submissions to the queue every worker consumes for them
        "task_routes": ({SUBMIT_TASK: {"queue": settings.submit_queue}}
                        if settings.submit_queue else {}),
        "task_create_missing_queues": True,
        "worker_hijack_root_logger": False,
        "broker_pool_limit": 10,
    }


_SUCCESS_WITHOUT_VALUE = b'", "SUCCESS", null]'
"""How a chord part that succeeded with no value ends, JSON-encoded by Celery's backend."""


class SendOnlyRedisBackend(RedisBackend):  # type: ignore[misc]  # celery is untyped
    """The Redis result backend without tracking the results of the tasks it publishes.

    Celery's Redis backend SUBSCRIBEs to every task it publishes and keeps a result object
    per task (chord headers included) until it sees that task finish, so that ``.get()``
    can be pushed the result.  Neither the coordinator nor a worker ever waits on Celery
    results (they read the run store), so that was a wasted round trip and a dangling
    channel per task, and memory that grew with every chord a process applied (measured:
    about 1.4 MiB per 1,000 steps in a worker's pool children).  Storing results and
    counting chord parts are unchanged.

    When a chord's last part arrives, Celery reads every part's stored result back and
    decodes each (about 4 µs apiece here: 8.4 ms for a 2,000-step fan-out, the larger share
    of the 20 ms between the last branch's end and the join's start), to pass the list to
    the chord's body.  An immutable body (every join the compiler builds) takes no
    arguments, so Celery drops that list: a part of such a chord that succeeded is stored
    without its value, and read back as ``None`` without a decode.  Any other part is
    stored and decoded as before (a failure still raises the chord's error).
    """

    def on_chord_part_return(self, request: Any, state: str, result: Any,
                             propagate: Any = None, **kwargs: Any) -> Any:
        body = getattr(request, "chord", None)
        if state == states.SUCCESS and isinstance(body, dict) and body.get("immutable"):
            result = None  # the body takes no arguments: nothing to store and read back
        return super().on_chord_part_return(request, state, result, propagate, **kwargs)

    def _unpack_chord_result(self, tup: Any, decode: Any, *args: Any, **kwargs: Any) -> Any:
        raw = tup if isinstance(tup, bytes) else str(tup).encode()
        if raw.startswith(b'[1, "') and raw.endswith(_SUCCESS_WITHOUT_VALUE):
            return None
        return super()._unpack_chord_result(tup, decode, *args, **kwargs)

    def on_task_call(self, producer: Any, task_id: str) -> None:
        return None

    def add_pending_result(self, result: Any, weak: bool = False,
                           start_drainer: bool = True) -> Any:
        return result

    def add_pending_results(self, results: Any, weak: bool = False) -> list[Any]:
        return list(results)

    def remove_pending_result(self, result: Any) -> Any:
        return result


class SendOnlySentinelBackend(SendOnlyRedisBackend, SentinelBackend):  # type: ignore[misc]
    """:class:`SendOnlyRedisBackend` on a Sentinel group (``sentinel://`` URLs): Celery's
    Sentinel backend, which finds the current master through the Sentinels."""


def send_only_backend_url(redis_url: str) -> str:
    """The ``result_backend`` setting that selects :class:`SendOnlyRedisBackend` (or, for
    a ``sentinel://`` URL, :class:`SendOnlySentinelBackend`)."""
    cls = SendOnlySentinelBackend if is_sentinel_url(redis_url) else SendOnlyRedisBackend
    return f"{__name__}:{cls.__name__}+{redis_url}"


def client_app(settings: Settings, timeout_s: float | None = None) -> Celery:
    """A Celery app that only sends tasks (by name); it registers none.

    Args:
        settings: the one settings object.
        timeout_s: when given, fail fast instead of riding out an outage: every broker
            and backend socket waits at most this long, and a broker connection or a
            publish is not retried (the command-line's choice: a person is waiting).
    """
    app = Celery("orchestrator", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.conf.result_backend = send_only_backend_url(settings.backend_target.url)
    if not is_sentinel_url(settings.broker_target.url):  # a client per channel, not message
        app.conf.broker_transport = broker.TRANSPORT
    if timeout_s is not None:
        # max_retries 0: kombu's connection failover gives up on the first refusal
        quick = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s,
                 "max_retries": 0}
        app.conf.broker_transport_options = {**app.conf.broker_transport_options, **quick}
        app.conf.update(
            broker_connection_timeout=timeout_s,
            broker_connection_retry=False,
            broker_connection_max_retries=0,
            task_publish_retry=False,
            redis_socket_timeout=timeout_s,
            redis_socket_connect_timeout=timeout_s,
            result_backend_always_retry=False,
        )
    return app
