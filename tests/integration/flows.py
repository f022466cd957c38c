"""Step functions and workflows used only by the integration tests."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from billiard.process import current_process
from celery import current_task as celery_current_task
from celery import signals

from orchestrator.core.dsl import Workflow
from orchestrator.core.models import RetryPolicy
from orchestrator.core.registry import step_function
from orchestrator.dev import shapes
from orchestrator.runtime.context import current

log = logging.getLogger(__name__)


def _log(event: str) -> None:
    ctx = current()
    ctx.redis.rpush(f"test:log:{ctx.run_id}", json.dumps(
        {"step": ctx.step_id, "event": event, "t": time.time(), "attempt": ctx.attempt}))


@step_function("test.sleep")
def sleep_step(seconds: float = 0.0) -> float:
    """Sleep, recording start and end times in the run's test log."""
    _log("start")
    time.sleep(seconds)
    _log("end")
    return seconds


@step_function("test.flaky")
def flaky(failures: int) -> int:
    """Fail the first ``failures`` attempts, then succeed."""
    _log("start")
    if current().attempt <= failures:
        raise ConnectionError(f"attempt {current().attempt} fails on purpose")
    return current().attempt


@step_function("test.surrogate")
def surrogate() -> dict[str, str]:
    """Return a string JSON allows and UTF-8 cannot carry (a lone surrogate)."""
    return {"text": "\ud800x"}


@step_function("test.blob")
def blob(size: int) -> dict[str, str]:
    """Return an output of about ``size`` bytes as JSON (test_payloads: the output limit)."""
    _log("start")
    return {"blob": "x" * size}


@step_function("test.fail")
def fail(message: str = "boom") -> None:
    """Always fail."""
    raise RuntimeError(message)


# The "N": C needs A and B, D needs only B.  D must start before A ends.
_n = Workflow("n_shape")
a = _n.step("a", sleep_step, seconds=2.0)
b = _n.step("b", sleep_step, seconds=0.05)
_n.step("c", sleep_step, after=[a, b], seconds=0.0)
_n.step("d", sleep_step, after=[b], seconds=0.0)
n_shape = _n.build()

_u = Workflow("surrogate_flow")
_u.step("odd", surrogate)
surrogate_flow = _u.build()

# the output limit (tests/integration/test_payloads.py): "big" may retry, but an output
# too large fails it at once; "after_big" then skips, "on_big" handles the failure
_bl = Workflow("blob_flow", input_schema={"type": "object", "required": ["size"]})
_bl_big = _bl.step("big", blob, size=_bl.input.size,
                   retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.1, jitter=0.0))
_bl.step("after_big", sleep_step, after=[_bl_big], seconds=0.0)
_bl.step("on_big", sleep_step, handles=[_bl_big], seconds=0.0)
blob_flow = _bl.build()

_r = Workflow("retry_flow")
_r.step("flaky", flaky, failures=2,
        retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.3, multiplier=2.0, jitter=0.0))
retry_flow = _r.build()

_t = Workflow("timeout_flow")
slow = _t.step("slow", sleep_step, seconds=30.0, timeout_s=1.0)
_t.step("after_slow", sleep_step, after=[slow], trigger_rule="all_done", seconds=0.0)
timeout_flow = _t.build()

_c = Workflow("cancel_flow")
first = _c.step("first", sleep_step, seconds=30.0)
_c.step("second", sleep_step, after=[first], seconds=0.0)
cancel_flow = _c.build()

_k = Workflow("kill_flow")
long_ = _k.step("long", sleep_step, seconds=3.0)
_k.step("tail", sleep_step, after=[long_], seconds=0.0)
kill_flow = _k.build()

# a condition may read any ancestor, not only a parent
_g = Workflow("grandparent_condition")
ga = _g.step("a", sleep_step, seconds=0.01)
gb = _g.step("b", sleep_step, after=[ga], seconds=0.0)
_g.step("c", sleep_step, after=[gb], when="steps.a.output > 0.0", seconds=0.0)
_g.step("d", sleep_step, after=[gb], when="steps.a.output > 1.0", seconds=0.0)
grandparent_condition = _g.build()

@step_function("test.speak")
def speak() -> str:
    """Log a line with the step function's own logger (no orchestrator API)."""
    log.info("hello from the step")
    return "spoken"


_s = Workflow("logging_flow")
_s.step("speak", speak)
logging_flow = _s.build()

_f = Workflow("fail_flow")
bad = _f.step("bad", fail, message="bad step")
good = _f.step("good", sleep_step, seconds=0.0)
_f.step("needs_bad", sleep_step, after=[bad, good], seconds=0.0)
_f.step("cleanup", sleep_step, after=[bad, good], trigger_rule="all_done", seconds=0.0)
fail_flow = _f.build()


EXECUTING_DIR = Path(tempfile.gettempdir()) / "orch-test-executing"
"""One file per executing thread of the test workers (``<pid>-<thread id>``), naming
the in-flight mark of the step run it executes: written before the mark is set, removed
when the execution ends, however it ends.  A local file, so that no Redis failure can
leave it behind."""


def _me() -> str:
    return f"{os.getpid()}-{threading.get_ident()}"


def enter(r: Any, run_id: str, step_id: str) -> str:
    """Mark this execution of the step run in flight (``test:inflight:<run>:<step>``,
    the executing pool process and thread) and count an overlap in
    ``test:overlap:<run>`` when another execution of it still runs: its process alive
    and its thread still executing this step run (its file in :data:`EXECUTING_DIR`).
    A mark left behind by an execution that ended (a SIGKILLed process, or a Redis that
    died under the mark's write and lost the reply) is stale, not an overlap.  Call
    :func:`done_executing` when the execution ends.  Returns the mark's key."""
    key = f"test:inflight:{run_id}:{step_id}"
    me = _me()
    EXECUTING_DIR.mkdir(exist_ok=True)
    (EXECUTING_DIR / me).write_text(key)  # before the mark: a live execution has its file
    if not r.set(key, me, nx=True, ex=600):
        held = r.get(key)
        holder = held.decode() if isinstance(held, bytes) else held
        if holder is not None and holder != me and _executing(holder, key):
            r.hincrby(f"test:overlap:{run_id}", step_id, 1)
            r.rpush(f"test:overlap-by:{run_id}", f"{step_id} {me} met {holder}")
        r.set(key, me, ex=600)
    return key


def _executing(holder: str, key: str) -> bool:
    """Whether the execution named ``holder`` (``<pid>-<thread id>``) is alive and still
    executing the step run of mark ``key``."""
    pid = holder.split("-", 1)[0]
    if not pid.isdigit() or not _alive(int(pid)):
        return False
    try:
        return (EXECUTING_DIR / holder).read_text() == key
    except FileNotFoundError:
        return False


def done_executing() -> None:
    """This thread's execution ended (see :func:`enter`)."""
    (EXECUTING_DIR / _me()).unlink(missing_ok=True)


def leave(r: Any, key: str) -> None:
    """Clear an in-flight mark, waiting out a Redis restart (up to 10 s): a step that ends
    while Redis is down still leaves no mark behind."""
    through_restart(lambda: r.delete(key))


def through_restart(call: Callable[[], object]) -> None:
    """Call ``call`` (a Redis write of a step's bookkeeping), waiting out a Redis restart
    (up to 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            call()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a killed pool child its worker
    has not reaped yet runs nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


class Counted:
    """Mix-in for a test's stack: what the steps of this module counted themselves, read
    with the stack's client ``r`` (:func:`count`'s ``test:exec`` hash, :func:`enter`'s
    ``test:overlap`` hash)."""

    r: Any

    def executions(self, run_id: str) -> dict[str, int]:
        """Executions of each step of the run, as the step function counted them."""
        return {k: int(v) for k, v in self.r.hgetall(f"test:exec:{run_id}").items()}

    def overlaps(self, run_id: str) -> dict[str, int]:
        """Executions of each step that began while another of it still ran."""
        return {k: int(v) for k, v in self.r.hgetall(f"test:overlap:{run_id}").items()}


@step_function("test.count")
def count(pause_s: float = 0.0) -> int:
    """Count this execution of the step run in Redis (``test:exec:<run>`` hash, by step),
    and any overlap with another execution of it (``test:overlap:<run>``)."""
    ctx = current()
    r = ctx.redis
    n = int(r.hincrby(f"test:exec:{ctx.run_id}", ctx.step_id, 1))
    try:
        inflight = enter(r, ctx.run_id, ctx.step_id)
        time.sleep(pause_s)
        leave(r, inflight)
    finally:
        done_executing()
    return n


def _counted(name: str, deps: dict[str, list[str]], pause_s: float = 0.0,
             pauses: dict[str, float] | None = None) -> Any:
    """Counted steps in the shape ``deps``, each pausing ``pause_s`` (``pauses``: by step)."""
    wf = Workflow(name)
    handles: dict[str, Any] = {}
    for s, parents in deps.items():
        handles[s] = wf.step(s, count, after=[handles[p] for p in parents],
                             pause_s=(pauses or {}).get(s, pause_s))
    return wf.build()


zigzag_11 = _counted("zigzag_11", shapes.zigzag(11))
random_nsp_60 = _counted("random_nsp_60", shapes.random_dag(random.Random(7), 60))
long_count = _counted("long_count", {"long": [], "after_long": ["long"]}, pause_s=7.0)
line_count = _counted("line_count", {f"s{i}": [f"s{i - 1}"] if i else [] for i in range(6)})

line_across_units = _counted("line_across_units", shapes.chain(70), pauses={"s31": 3.0})
"""A counted line of 70 steps (three units at the default 32 signatures: s0-s31, s32-s63,
s64-s69); s31, its first unit's last, takes 3 s (to be killed in)."""

# --- a pool process that dies after its task returned (tests/integration/test_redelivery.py)
_dying: list[int] = []


@step_function("test.count_then_die")
def count_then_die() -> int:
    """Count this execution; the first time in a run, the worker (its main process, then
    this pool process) is SIGKILLed right after the task returns, before its message is
    acknowledged."""
    ctx = current()
    n = int(ctx.redis.hincrby(f"test:exec:{ctx.run_id}", ctx.step_id, 1))
    if ctx.redis.set(f"test:died:{ctx.run_id}", "1", nx=True, ex=600):
        _dying.append(os.getpid())
    return n


@signals.task_prerun.connect
def _count_delivery(kwargs: dict[str, Any] | None = None, **_: Any) -> None:
    """Count the deliveries of the ``die_*`` steps' tasks (run or not) in
    ``test:deliveries:<run>``."""
    step = (kwargs or {}).get("step_id") or ""
    url = os.environ.get("ORCH_REDIS_URL")
    if step.startswith("die_") and url:
        redis.Redis.from_url(url).hincrby(f"test:deliveries:{kwargs['run_id']}", step, 1)


# --- a task that hangs after its step ended (tests/integration/test_leases.py)
HUNG_MARK = "orch-test-hung-"
"""The file (in the temporary directory, then the run id) that the one hang of a run of
``hung_fan`` leaves."""
HANG_VARIABLE = "ORCH_TEST_HANG_ONCE"
"""Set (to anything) in a worker's environment, its processes hang as :func:`_hang_once`
says.  Only there: a ``before_task_publish`` receiver turns the message templates off in
every process it is connected in (``orchestrator/runtime/messages.py``)."""


def _hang_once(body: Any = None, **_: Any) -> None:
    """In the task of step ``hang_split``, the first publish of ``hang_p1`` of its run never
    returns: the task hangs after its step ended and one message of its fan-out went out
    (as a pool process of ``bench.chaos`` once hung).  Once per run."""
    request = getattr(celery_current_task, "request", None)
    own = getattr(request, "kwargs", None) or {}
    sent = body[1] if isinstance(body, list | tuple) and len(body) > 1 else {}
    if own.get("step_id") != "hang_split" or not isinstance(sent, dict) \
            or sent.get("step_id") != "hang_p1":
        return
    mark = Path(tempfile.gettempdir()) / f"{HUNG_MARK}{own.get('run_id')}"
    try:
        os.close(os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    time.sleep(3600)


if os.environ.get(HANG_VARIABLE):
    signals.before_task_publish.connect(_hang_once)

hung_fan = _counted("hung_fan", {"hang_split": [], "hang_p0": ["hang_split"],
                                 "hang_p1": ["hang_split"], "hang_p2": ["hang_split"]})


@signals.task_postrun.connect
def _die_after_return(**_: Any) -> None:
    if os.getpid() in _dying:
        if current_process().name.startswith("ForkPoolWorker"):  # a prefork pool child
            os.kill(os.getppid(), signal.SIGKILL)  # the worker's main process
        os.kill(os.getpid(), signal.SIGKILL)


_d = Workflow("die_after_success")
_d_first = _d.step("die_first", count_then_die)
_d.step("die_second", count, after=[_d_first])
die_after_success = _d.build()

# --- a pool process that dies mid-step, once (tests/integration/test_redelivery.py) -------


@step_function("test.count_die_once")
def count_die_once(pause_s: float = 1.0) -> int:
    """Count this execution (and any overlap); the first execution in a run then sleeps
    ``pause_s`` and SIGKILLs its own pool process mid-step (the worker's main process
    lives on: Celery sees a lost worker and requeues the message)."""
    ctx = current()
    n = int(ctx.redis.hincrby(f"test:exec:{ctx.run_id}", ctx.step_id, 1))
    inflight = enter(ctx.redis, ctx.run_id, ctx.step_id)
    time.sleep(pause_s)
    if n == 1:
        done_executing()
        ctx.redis.delete(inflight)  # the mark of an execution that is over
        os.kill(os.getpid(), signal.SIGKILL)
    leave(ctx.redis, inflight)
    done_executing()
    return n


_do = Workflow("die_once")
_do.step("dies", count_die_once)
die_once = _do.build()
backlog_step = _counted("backlog_step", {"b": []}, pause_s=0.3)
"""One counted step of 0.3 s: the backlog queued behind ``die_once``."""

# a step allowed two minutes: `orchestrator doctor` compares it with the visibility timeout
_lt = Workflow("long_timeout")
_lt.step("patient", sleep_step, seconds=0.0, timeout_s=120.0)
long_timeout = _lt.build()

# --- durable waits (tests/integration/test_waits.py) -----------------------------------
# each step after a wait counts its own executions (test:exec:<run>)
_we = Workflow("wait_event_flow", input_schema={"type": "object", "required": ["id"]})
_we_before = _we.step("before", count)
_we_wait = _we.wait("paid", event='"pay:" + input.id', timeout_s=3600.0, after=[_we_before])
_we.step("after", count, after=[_we_wait])
_we.step("on_timeout", count, handles=[_we_wait])
wait_event_flow = _we.build()

_wa = Workflow("approval_flow")
_wa_before = _wa.step("before", count)
_wa_ok = _wa.wait("approve", approval=True, prompt="ship it?", timeout_s=3600.0,
                  after=[_wa_before])
_wa.step("after", count, after=[_wa_ok])
_wa.step("on_reject", count, handles=[_wa_ok])
approval_flow = _wa.build()

_ws = Workflow("sleep_flow")
_ws_nap = _ws.wait("nap", sleep_s=3600.0)
_ws.step("after", count, after=[_ws_nap])
sleep_flow = _ws.build()

_wu = Workflow("until_flow", input_schema={"type": "object", "required": ["at"]})
_wu_until = _wu.wait("until", until="timestamp(input.at)")
_wu.step("after", count, after=[_wu_until])
until_flow = _wu.build()
